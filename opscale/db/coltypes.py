"""Column types that behave the same on PostgreSQL and SQLite.

- :class:`UtcDateTime`: every timestamp is stored in UTC and comes back timezone-aware in UTC on both
  backends. PostgreSQL stores ``timestamptz``; SQLite has no timestamp type, so SQLAlchemy stores an
  ISO-like string without an offset and we re-attach UTC on the way out. Naive datetimes are refused on
  the way in: a naive value's zone is a guess, and a wrong guess corrupts history silently.
- :data:`JSONType`: ``JSONB`` on PostgreSQL (indexable, compact), SQLite's JSON text elsewhere. Never
  pickle: a pickled column can only be read by the code that wrote it, and unpickling runs code.
- :func:`status_enum`: a Python enum stored as its string *value* in a VARCHAR (``native_enum=False``),
  so both backends store the same thing and adding a member needs no ALTER TYPE. No CHECK constraint:
  the enum type already refuses unknown values on write, and the transition tables in
  :mod:`opscale.db.status` are the real rules.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

STATUS_LENGTH = 32


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # SQLite: stored in UTC by process_bind_param
        return value.astimezone(UTC)


def _json(*, nullable: bool) -> sa.types.TypeEngine[Any]:
    # none_as_null: Python None is SQL NULL, not the JSON literal 'null', so "IS NULL" means absent.
    return sa.JSON(none_as_null=nullable).with_variant(JSONB(none_as_null=nullable), "postgresql")


JSONType = _json(nullable=False)
NullableJSONType = _json(nullable=True)

# SQLite only auto-increments an ``INTEGER PRIMARY KEY`` (the rowid alias), not a BIGINT one.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _values(enum_cls: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_cls]


def status_enum(enum_cls: type[enum.Enum]) -> sa.Enum:
    return sa.Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=STATUS_LENGTH,
        values_callable=_values,
        validate_strings=True,
    )
