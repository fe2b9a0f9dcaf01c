"""Helpers shared by the repositories: clock, dialect-specific upserts, CAS row counts, validation.

Validation here is the part both backends must agree on: PostgreSQL refuses a too-long VARCHAR or a
NaN in JSONB where SQLite silently stores it, so the repositories check first and raise
``InvalidArgument`` naming the field, whichever backend is underneath.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from opscale.clock import Clock, SystemClock
from opscale.db.models import Base
from opscale.errors import InvalidArgument

MAX_LIST_LIMIT = 1000


class RepoBase:
    """A repository works inside the caller's session and transaction; it never commits."""

    def __init__(self, session: AsyncSession, *, clock: Clock | None = None) -> None:
        self._session = session
        self._clock: Clock = clock or SystemClock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def _insert(self, entity: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with ``on_conflict_do_*`` for whichever backend the session is bound to.

        Conflicts are detected by the database (not by a prior SELECT, which races, nor by catching
        IntegrityError and matching its text, which differs per driver).
        """
        if self._session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)

    async def _rowcount(self, statement: Executable) -> int:
        result = await self._session.execute(statement)
        return cast("CursorResult[Any]", result).rowcount


def check_text(field: str, value: str, max_length: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidArgument(f"{field}: must be a string of 1 to {max_length} characters", field=field)
    return value


def check_json(field: str, value: Any) -> Any:
    """A deep copy of ``value`` as it will read back (tuples become lists), or ``InvalidArgument``."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"{field}: must be JSON (finite numbers, string keys): {exc}", field=field
        ) from exc
    return json.loads(text)


def check_object(field: str, value: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field}: must be a JSON object, got {type(value).__name__}", field=field)
    return cast(dict[str, Any], check_json(field, dict(value)))


def check_limit(limit: int, *, field: str = "limit") -> int:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"{field}: must be between 1 and {MAX_LIST_LIMIT}, got {limit}", field=field)
    return limit


def check_aware(field: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{field}: must be a timezone-aware datetime", field=field)
    return value.astimezone(UTC)


def check_version(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{field}: must be an integer >= 1, got {value!r}", field=field)
    return value
