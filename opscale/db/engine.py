"""Engine and session factories — and deliberately no module-global engine.

Each process builds its engines once from its config and passes them (or a session factory) down;
tests build one per test database. Callers may give a URL in any common form; it is normalised to the
drivers opscale ships with:

=====================================  ==========================  =========================
given                                  sync engine                 async engine
=====================================  ==========================  =========================
``sqlite:///f.db`` (any sqlite+drv)    ``sqlite+pysqlite:///f.db``  ``sqlite+aiosqlite:///f.db``
``postgres://`` ``postgresql://``       ``postgresql+psycopg://``   ``postgresql+psycopg://``
``postgresql+psycopg2/asyncpg://``     (psycopg 3 does both sync and async)
=====================================  ==========================  =========================

SQLite connections get ``foreign_keys=ON`` (off by default in SQLite), WAL (readers never block the
writer) and a busy timeout. They also start every transaction with ``BEGIN IMMEDIATE`` instead of
pysqlite's implicit, deferred, statement-dependent BEGIN: reads then belong to the same transaction as
the writes that follow (the app layer owns the transaction, so it must be a real one), SAVEPOINTs work,
DDL is transactional, and a writer waits for the lock up front instead of failing later with
SQLITE_BUSY when it upgrades a read snapshot. That serialises writers, which is the price of the
embedded default; production runs on PostgreSQL. Periodic readers that never write (the decision
loop's scan, the ledger tail) use :func:`read_session_factory`: a deferred BEGIN, which in WAL mode
neither takes nor waits for the write lock, so a reader the event loop is slow to resume cannot keep
a writer waiting.

Connection failures (refused, unknown host, bad credentials, unopenable file) and disconnects surface
as :class:`opscale.errors.Unavailable` naming the host or file, never the password.
"""

from __future__ import annotations

import sqlite3
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from opscale.db import sqlite_async
from opscale.errors import InvalidArgument, Unavailable

SQLITE_BUSY_TIMEOUT_S = 5.0
# Execution option of read_session_factory's engine: on SQLite its transactions BEGIN deferred.
READ_ONLY = "opscale_read_only"

_PG_SCHEMES = {"postgres", "postgresql"}


def normalize_url(url: str | URL, *, use_async: bool) -> URL:
    """Return ``url`` with the driver opscale uses for that backend (see the module table)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError as exc:
        raise InvalidArgument(f"database_url: not a database URL ({exc})", field="database_url") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if use_async else "sqlite+pysqlite")
    if backend in _PG_SCHEMES:
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidArgument(
        f"database_url: backend '{backend}' is not supported; use postgresql://… or sqlite:///…",
        field="database_url",
    )


def public_url(url: str | URL) -> str:
    """The URL with its password removed (not masked), safe for messages, logs and CLI hints."""
    parsed = make_url(url) if isinstance(url, str) else url
    # URL.set(password=None) means "leave unchanged"; _replace really clears it.
    return parsed._replace(password=None).render_as_string(hide_password=False)


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _where(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL at {url.host or 'localhost'}{port}/{url.database or ''}"


def _engine_kwargs(url: URL) -> dict[str, Any]:
    if _is_sqlite_memory(url):
        # Every new connection to :memory: is a new, empty database: share one connection.
        return {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    if url.get_backend_name() == "sqlite":
        return {}
    # A server restart or failover leaves dead pooled connections; test them before use.
    return {"pool_pre_ping": True}


def _install_sqlite_hooks(engine: Engine, *, foreign_keys: bool, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's begin event below (the documented pysqlite and
        # aiosqlite recipe); PRAGMAs then also run outside any transaction, as they must.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def redact_secret(text: str, secret: str, username: str | None) -> str:
    """``text`` without the password. Where the password equals the user name (the demo's
    opscale:opscale), only its password positions are masked: masking every occurrence would hide the
    role name that errors like 'role "opscale" does not exist' are about."""
    if secret != username:
        return text.replace(secret, "***")
    for form in (":{}@", "password={}", "password='{}'"):
        text = text.replace(form.format(secret), form.format("***"))
    return text


def _install_error_mapping(engine: Engine, url: URL) -> None:
    where = _where(url)
    secret = url.password if isinstance(url.password, str) and url.password else None

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> BaseException | None:
        if ctx.is_pre_ping:
            return None  # the pool replaces the dead connection itself
        # sqlite3 errors carry the (extended) result code; the low byte is the primary one.
        code = getattr(ctx.original_exception, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return Unavailable(f"{where} stayed locked by another writer past the busy timeout; retry")
        connecting = ctx.connection is None
        if not (connecting or ctx.is_disconnect):
            return None
        if connecting and not isinstance(
            ctx.sqlalchemy_exception, sa.exc.OperationalError | sa.exc.InterfaceError
        ):
            return None
        reason = str(ctx.original_exception).strip().splitlines()[0] if str(ctx.original_exception) else ""
        if secret:
            reason = redact_secret(reason, secret, url.username)
        verb = "cannot connect to" if connecting else "lost the connection to"
        return Unavailable(f"{verb} {where}: {reason}".rstrip(": "))


def _configure(engine: Engine, url: URL, *, sqlite_foreign_keys: bool, sqlite_busy_timeout_s: float) -> None:
    if url.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine, foreign_keys=sqlite_foreign_keys, busy_timeout_s=sqlite_busy_timeout_s)
    _install_error_mapping(engine, url)


def make_sync_engine(
    url: str | URL,
    *,
    echo: bool = False,
    sqlite_foreign_keys: bool = True,
    sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
) -> Engine:
    """A sync engine (Alembic, scripts, the CLI).

    ``sqlite_busy_timeout_s``: how long a SQLite transaction waits for another writer before failing
    with ``Unavailable`` (see the module docstring for why every SQLite transaction is a writer).

    ``sqlite_foreign_keys=False`` is for migrations only: Alembic's batch mode rebuilds SQLite tables
    by copy-drop-rename, and with foreign keys on, dropping a parent table cascades into its children.
    The migration environment checks ``PRAGMA foreign_key_check`` before committing instead.
    """
    normalized = normalize_url(url, use_async=False)
    engine = sa.create_engine(normalized, echo=echo, **_engine_kwargs(normalized))
    _configure(
        engine,
        normalized,
        sqlite_foreign_keys=sqlite_foreign_keys,
        sqlite_busy_timeout_s=sqlite_busy_timeout_s,
    )
    return engine


def make_async_engine(
    url: str | URL, *, echo: bool = False, sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
) -> AsyncEngine:
    """An asyncio engine for the services (grpc.aio handlers, the control loop).

    On SQLite, do not hold a session open while awaiting another session's write in the same task:
    the second waits for the first's lock and fails after ``sqlite_busy_timeout_s``.
    """
    normalized = normalize_url(url, use_async=True)
    kwargs = _engine_kwargs(normalized)
    if normalized.get_backend_name() == "sqlite":
        # Connections whose close cannot hang after a cancelled query (see opscale.db.sqlite_async).
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "async_creator_fn": sqlite_async.connect}
    engine = create_async_engine(normalized, echo=echo, **kwargs)
    _configure(
        engine.sync_engine, normalized, sqlite_foreign_keys=True, sqlite_busy_timeout_s=sqlite_busy_timeout_s
    )
    return engine


@overload
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]: ...
@overload
def session_factory(engine: Engine) -> sessionmaker[Session]: ...
def session_factory(engine: AsyncEngine | Engine) -> async_sessionmaker[AsyncSession] | sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (repos return records, but app code may
    still touch an ORM row it loaded itself after committing)."""
    if isinstance(engine, AsyncEngine):
        return async_sessionmaker(engine, expire_on_commit=False)
    return sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for code that only reads: on SQLite they never hold the write lock (module docstring).
    A write through one fails fast with ``Unavailable`` when another writer holds the lock, so don't."""
    return session_factory(engine.execution_options(**{READ_ONLY: True}))
