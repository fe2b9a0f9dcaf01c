"""Shared fixtures: real PostgreSQL and Redis, never mocks.

Without ``CI=true`` a test that needs an unreachable server is skipped with the reason; with
``CI=true`` it fails, so CI can never go green by skipping the database tests.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

PG_ADMIN_URL = os.environ.get("OPSCALE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OPSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 2):
            return True
    except OSError:
        return False


def _require(url: str, default_port: int, what: str) -> None:
    if _reachable(url, default_port):
        return
    message = f"{what} is not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so this test fails instead of skipping", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards). Sync URL (psycopg)."""
    _require(PG_ADMIN_URL, 5432, "PostgreSQL")
    import sqlalchemy as sa

    name = f"opscale_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    """A fresh SQLite file for this test. Sync URL."""
    return f"sqlite:///{tmp_path}/opscale.db"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def redis_url() -> str:
    _require(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix unique to this test, so tests never see each other's keys."""
    return f"opscale-test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[object]:
    """An async Redis client; every key under this test's prefix is deleted afterwards."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


E2E = Path(__file__).parent / "e2e"
CHAOS = Path(__file__).parent / "chaos"
#: Tests that take tens of seconds on their own (the whole demo; the quick evaluation matrix).
SLOW = {
    "test_demo_runs_to_the_end_and_writes_the_report",
    "test_quick_evaluation_is_unchanged_by_the_refactor",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The declared markers, from what a test uses, so `-m "not postgres"` or `-m e2e` select truly:
    ``postgres``/``redis`` for a test that takes those servers (directly, or through the backend
    parameter of ``db_url``/``runtime``), ``e2e`` for tests/e2e (several processes), ``chaos`` for
    tests/chaos (faults injected into processes on private servers), ``slow`` for SLOW."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = {str(v) for v in callspec.params.values()} if callspec is not None else set()
        if "pg_url" in names or params & {"postgres", "postgres-redis"}:
            item.add_marker(pytest.mark.postgres)
        if names & {"redis_url", "redis_client"} or "postgres-redis" in params:
            item.add_marker(pytest.mark.redis)
        if E2E in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
        if CHAOS in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)
        if getattr(item, "originalname", item.name) in SLOW:
            item.add_marker(pytest.mark.slow)
