"""Engine factory: URL forms, connection errors as Unavailable, SQLite settings, UTC timestamps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from opscale.db.coltypes import UtcDateTime
from opscale.db.engine import (
    make_async_engine,
    make_sync_engine,
    normalize_url,
    public_url,
    read_session_factory,
    session_factory,
)
from opscale.errors import InvalidArgument, Unavailable


@pytest.mark.parametrize(
    ("given", "sync", "use_async"),
    [
        ("sqlite:///x.db", "sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_url_forms(given: str, sync: str, use_async: str) -> None:
    assert normalize_url(given, use_async=False).render_as_string() == sync
    assert normalize_url(given, use_async=True).render_as_string() == use_async


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(InvalidArgument, match="database_url"):
        normalize_url(url, use_async=False)


def test_public_url_drops_the_password() -> None:
    assert (
        public_url("postgresql+psycopg://app:s3cr%40t@db:5432/opscale")
        == "postgresql+psycopg://app@db:5432/opscale"
    )


UNREACHABLE = "postgresql://app:s3cret@127.0.0.1:1/opscale"  # port 1: nothing listens, refused at once


def test_sync_connect_failure_is_unavailable_without_the_password() -> None:
    engine = make_sync_engine(UNREACHABLE)
    with pytest.raises(Unavailable) as info, engine.connect():
        pass
    assert "127.0.0.1:1/opscale" in str(info.value) and "s3cret" not in str(info.value)
    engine.dispose()


async def test_async_connect_failure_is_unavailable_without_the_password() -> None:
    engine = make_async_engine(UNREACHABLE)
    with pytest.raises(Unavailable) as info:
        async with engine.connect():
            pass
    assert "127.0.0.1:1/opscale" in str(info.value) and "s3cret" not in str(info.value)
    await engine.dispose()


def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    engine = make_sync_engine(f"sqlite:///{tmp_path}/missing-dir/x.db")
    with pytest.raises(Unavailable, match="missing-dir"), engine.connect():
        pass


def test_sqlite_foreign_keys_wal_and_real_transactions(sqlite_url: str) -> None:
    engine = make_sync_engine(sqlite_url)
    with engine.begin() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        raise RuntimeError("roll back")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    engine.dispose()


async def test_sqlite_memory_database_is_shared_by_the_pool() -> None:
    engine = make_async_engine("sqlite://")
    async with engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    async with engine.connect() as connection:
        assert (await connection.exec_driver_sql("SELECT count(*) FROM t")).scalar() == 0
    await engine.dispose()


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgres"])  # type: ignore[no-untyped-call]
def test_utc_datetime(dialect: sa.Dialect) -> None:
    column = UtcDateTime()
    plus2 = timezone(timedelta(hours=2))
    stored = column.process_bind_param(datetime(2030, 1, 1, 14, tzinfo=plus2), dialect)
    assert stored == datetime(2030, 1, 1, 12, tzinfo=UTC) and stored.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2030, 1, 1), dialect)
    assert column.process_result_value(datetime(2030, 1, 1, 12), dialect) == datetime(
        2030, 1, 1, 12, tzinfo=UTC
    )
    back = column.process_result_value(datetime(2030, 1, 1, 14, tzinfo=plus2), dialect)
    assert back is not None and back.tzinfo is UTC and back.hour == 12


def test_sqlite_lock_timeout_is_unavailable(sqlite_url: str) -> None:
    # Two engines on one file: while the first holds its transaction, the second gives up after
    # its busy timeout with Unavailable (retryable), not a raw driver error.
    holder = make_sync_engine(sqlite_url)
    waiter = make_sync_engine(sqlite_url, sqlite_busy_timeout_s=0.05)
    try:
        with holder.begin() as held:
            held.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            with pytest.raises(Unavailable, match="locked"), waiter.begin():
                pass
    finally:
        holder.dispose()
        waiter.dispose()


async def test_sqlite_read_sessions_neither_hold_nor_wait_for_the_write_lock(sqlite_url: str) -> None:
    # A read session's open transaction (one the event loop is slow to finish, say) lets a writer in,
    # and a read starts while a writer holds the lock; a plain session's transaction is a writer.
    writer = make_sync_engine(sqlite_url, sqlite_busy_timeout_s=0.05)
    engine = make_async_engine(sqlite_url, sqlite_busy_timeout_s=0.05)
    try:
        with writer.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        async with read_session_factory(engine)() as reading:
            assert (await reading.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 0
            with writer.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with writer.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            async with read_session_factory(engine)() as reading:
                assert (await reading.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 1
            async with session_factory(engine)() as plain:
                with pytest.raises(Unavailable, match="locked"):
                    await plain.execute(sa.text("SELECT count(*) FROM t"))
    finally:
        writer.dispose()
        await engine.dispose()


async def _close_while_stopped(driver: Any, wait_s: float) -> bool:
    """Start a graceful ``close()``, force ``stop()`` meanwhile (SQLAlchemy's terminate when the close is
    cancelled), and say whether the close finished within ``wait_s``."""
    closing = asyncio.ensure_future(driver.close())
    await asyncio.sleep(0)  # the close's work is queued on the worker thread
    driver.stop()
    try:
        await asyncio.wait_for(closing, wait_s)
    except TimeoutError:
        return False
    return True


async def test_sqlite_close_after_a_forced_stop_does_not_hang(tmp_path: Path) -> None:
    # A cancelled agent stream left such a close pending and asyncio's shutdown waited for it for ever.
    engine = make_async_engine(f"sqlite:///{tmp_path}/t.db")
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert await _close_while_stopped(raw.driver_connection, 30.0)
            await conn.invalidate()
    finally:
        await engine.dispose()


async def test_plain_aiosqlite_still_hangs_there(tmp_path: Path) -> None:
    """The reason for opscale.db.sqlite_async: when this fails, aiosqlite fixed it; drop the module."""
    import aiosqlite

    driver = await aiosqlite.connect(str(tmp_path / "t.db"))
    assert not await _close_while_stopped(driver, 0.5)


def test_a_connection_error_keeps_the_role_name_and_hides_the_password() -> None:
    from opscale.db.engine import redact_secret

    # The demo's default URL has the password equal to the user: the role name must survive.
    msg = 'connection failed: FATAL:  role "opscale" does not exist'
    assert redact_secret(msg, "opscale", "opscale") == msg
    assert redact_secret("dsn postgresql://opscale:opscale@h/db", "opscale", "opscale") == (
        "dsn postgresql://opscale:***@h/db"
    )
    assert redact_secret("password=opscale user=opscale", "opscale", "opscale") == "password=*** user=opscale"
    # A password of its own is masked wherever it appears.
    assert redact_secret('role "alice" auth failed for s3cret', "s3cret", "alice") == (
        'role "alice" auth failed for ***'
    )
