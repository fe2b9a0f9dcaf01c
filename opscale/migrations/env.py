"""Alembic environment for opscale.

The database URL comes from, in this order:

1. ``-x url=…`` on the ``alembic`` command line;
2. ``config.attributes["sqlalchemy.url"]``, which :mod:`opscale.db.migrate` sets in code (an attribute,
   not a main option, so a ``%`` in a password is not taken for configparser interpolation);
3. ``sqlalchemy.url`` in ``alembic.ini``.

Any accepted form works (``sqlite:///…``, ``postgresql://…``); it is normalised to the sync driver.
Everything runs synchronously in the calling thread — no ``asyncio.run`` here — so migrations can be
started from a worker thread while an event loop runs elsewhere in the process.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context

from opscale.db.engine import make_sync_engine, normalize_url
from opscale.db.models import Base

config = context.config
target_metadata = Base.metadata

# Only the alembic command line configures logging from the ini file; when opscale runs migrations in
# code, the ini is not loaded and the host application's logging is left alone.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.attributes.get("sqlalchemy.url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: run `alembic -x url=postgresql://… upgrade head`")
    return str(url)


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        # SQLite DDL is transactional too (engine.py issues a real BEGIN), so a failed revision leaves
        # no half-migrated schema on either backend.
        "transactional_ddl": True,
    }


def _check_sqlite_foreign_keys(connection: sa.Connection) -> None:
    """Migrations run with SQLite foreign keys off (see make_sync_engine); verify them before commit."""
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        raise RuntimeError(
            f"migration left rows violating foreign keys (table, rowid, parent, fk): {violations}"
        )


def run_migrations_offline() -> None:
    url = normalize_url(_url(), use_async=False)
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = make_sync_engine(url, sqlite_foreign_keys=False)
    try:
        with engine.connect() as connection:
            dialect_name = connection.dialect.name
            context.configure(connection=connection, **_options(dialect_name))
            with context.begin_transaction():
                context.run_migrations()
                if dialect_name == "sqlite":
                    _check_sqlite_foreign_keys(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
