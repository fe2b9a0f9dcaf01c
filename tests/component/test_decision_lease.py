"""The lease contract, on both implementations: exclusive per deployment, released when no longer
wanted or on release_all, and (PostgreSQL) lost with its connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy as sa

from opscale.db.engine import make_async_engine
from services.decision.lease import InProcessLease, Lease, LockTable, PostgresAdvisoryLease

MakeLease = Callable[[str], Lease]


@pytest.fixture(params=["in-process", "postgres"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeLease]:
    made: list[Lease] = []
    if request.param == "in-process":
        table = LockTable()

        def build(holder: str) -> Lease:
            made.append(InProcessLease(table, holder))
            return made[-1]

        yield build
        for lease in made:
            await lease.release_all()
        return
    engine = make_async_engine(str(request.getfixturevalue("pg_url")))

    def build_pg(holder: str) -> Lease:
        made.append(PostgresAdvisoryLease(engine, holder))
        return made[-1]

    try:
        yield build_pg
    finally:
        for lease in made:
            await lease.release_all()
        await engine.dispose()


async def test_one_holder_per_deployment(make: MakeLease) -> None:
    a, b = make("a"), make("b")
    assert await a.sync(["x", "y"]) == {"x", "y"}
    assert await b.sync(["x", "y", "z"]) == {"z"}
    assert await a.sync(["x", "y"]) == {"x", "y"}  # holding again is idempotent
    assert await a.sync(["x"]) == {"x"}  # y deleted: released
    assert await b.sync(["x", "y", "z"]) == {"y", "z"}
    await a.release_all()
    assert await b.sync(["x", "y", "z"]) == {"x", "y", "z"}


@pytest.mark.parametrize("make", ["postgres"], indirect=True)  # the in-process table has no connection
async def test_a_dead_connection_loses_every_lease(make: MakeLease, request: pytest.FixtureRequest) -> None:
    a, b = make("a"), make("b")
    assert isinstance(a, PostgresAdvisoryLease)
    assert await a.sync(["x"]) == {"x"}
    pid = await a.backend_pid()
    engine = make_async_engine(str(request.getfixturevalue("pg_url")))
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await engine.dispose()
    assert await b.sync(["x"]) == {"x"}  # the server dropped a's lock with its connection
    assert await a.sync(["x"]) == frozenset()  # a notices its connection is gone and holds nothing
    assert await a.sync(["x"]) == frozenset()  # reconnected, but b holds it now
