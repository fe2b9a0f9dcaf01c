"""The lease contract, on both implementations: exclusive per name, released when no longer wanted or on
release_all, an epoch that grows with every take and fences the writes of a holder that was deposed, and
(PostgreSQL) lost with its connection or when its holder stops renewing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opscale.db.engine import make_async_engine, session_factory
from opscale.db.migrate import upgrade
from opscale.lease import fence, renewing
from opscale.services.decision.lease import InProcessLease, Lease, LockTable, PostgresAdvisoryLease

MakeLease = Callable[..., Lease]


@pytest.fixture(params=["in-process", "postgres"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    url = str(request.getfixturevalue("sqlite_url" if request.param == "in-process" else "pg_url"))
    upgrade(url)
    made = make_async_engine(url)
    yield made
    await made.dispose()


@pytest.fixture
async def make(engine: AsyncEngine) -> AsyncIterator[MakeLease]:
    made: list[Lease] = []
    table = LockTable()

    def build(holder: str, ttl_s: float = 3.0) -> Lease:
        if engine.dialect.name == "postgresql":
            made.append(PostgresAdvisoryLease(engine, holder, ttl_s=ttl_s))
        else:
            made.append(InProcessLease(table, holder, engine=engine))
        return made[-1]

    try:
        yield build
    finally:
        for lease in made:
            await lease.release_all()


async def test_one_holder_per_name(make: MakeLease) -> None:
    a, b = make("a"), make("b")
    assert await a.sync(["x", "y"]) == {"x", "y"}
    assert await b.sync(["x", "y", "z"]) == {"z"}
    assert await a.sync(["x", "y"]) == {"x", "y"}  # holding again is idempotent
    assert await a.sync(["x"]) == {"x"}  # y deleted: released
    assert await b.sync(["x", "y", "z"]) == {"y", "z"}
    await a.release_all()
    assert await b.sync(["x", "y", "z"]) == {"x", "y", "z"}


async def test_epochs_grow_with_each_take_and_fence_the_old_holder(
    make: MakeLease, engine: AsyncEngine
) -> None:
    a, b = make("a"), make("b")
    assert await a.sync(["x"]) == {"x"}
    first = a.epoch("x")
    assert first is not None and b.epoch("x") is None
    assert await a.sync(["x"]) == {"x"} and a.epoch("x") == first  # renewing keeps the epoch
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        assert await fence(session, a.namespace, {"x": first}) == {"x"}
    await a.release_all()
    assert await b.sync(["x"]) == {"x"}
    assert b.epoch("x") == first + 1
    async with sessions() as session, session.begin():
        # a, deposed, still believes in its epoch: the database says no; b's is current.
        assert await fence(session, a.namespace, {"x": first}) == frozenset()
        assert await fence(session, b.namespace, {"x": first + 1}) == {"x"}


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)  # the in-process table has no connection
async def test_a_dead_connection_loses_every_lease(make: MakeLease, engine: AsyncEngine) -> None:
    a, b = make("a"), make("b")
    assert isinstance(a, PostgresAdvisoryLease)
    assert await a.sync(["x"]) == {"x"}
    pid = await a.backend_pid()
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert await b.sync(["x"]) == {"x"}  # the server dropped a's lock with its connection
    assert await a.sync(["x"]) == frozenset()  # a notices its connection is gone and holds nothing
    assert await a.sync(["x"]) == frozenset()  # reconnected, but b holds it now


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_a_holder_that_stops_renewing_loses_the_lease_within_its_ttl(make: MakeLease) -> None:
    """What a SIGSTOPped, hung or partitioned holder looks like to the server: a session that says
    nothing. The server ends it after the TTL (idle_session_timeout), its advisory lock goes with it and
    another holder's next pass takes over."""
    ttl_s = 1.0
    a, b = make("a", ttl_s), make("b", ttl_s)
    assert await a.sync(["x"]) == {"x"}
    stopped = time.monotonic()  # a renews no more
    while await b.sync(["x"]) != {"x"}:
        assert time.monotonic() - stopped < ttl_s + 4, "the silent holder kept its lease"
        await asyncio.sleep(0.1)
    took_s = time.monotonic() - stopped
    assert took_s >= ttl_s * 0.9  # not before the TTL: a live holder is not robbed
    assert await a.sync(["x"]) == frozenset()  # a, waking, finds its session gone


# A lease holder in a process of its own: takes "x", says its epoch, then renews every 0.2 s.
_HOLDER = """
import asyncio, sys
from opscale.db.engine import make_async_engine
from opscale.lease import PostgresAdvisoryLease

async def main() -> None:
    lease = PostgresAdvisoryLease(make_async_engine(sys.argv[1]), "stopped")
    while True:
        if await lease.sync(["x"]):
            print(lease.epoch("x"), flush=True)
        await asyncio.sleep(0.2)

asyncio.run(main())
"""


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_a_sigstopped_leader_process_is_deposed_within_5_s_and_fenced(
    make: MakeLease, engine: AsyncEngine, pg_url: str
) -> None:
    """The issue's fault exactly: the leading process is SIGSTOPped (the standby never took over, as
    the kernel keeps answering for a stopped process's connection). Measured: takeover 3.0 s with the
    default 3 s TTL; the stopped leader's epoch no longer fences anything."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 30)
        old_epoch = int(line)
        standby = make("standby")
        assert await standby.sync(["x"]) == frozenset()
        os.kill(holder.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        while await standby.sync(["x"]) != {"x"}:
            assert time.monotonic() - stopped < 5.0, "the stopped leader kept its lease past 5 s"
            await asyncio.sleep(0.2)
        assert standby.epoch("x") == old_epoch + 1
        async with session_factory(engine)() as session, session.begin():
            assert await fence(session, standby.namespace, {"x": old_epoch}) == frozenset()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait()


async def _pass(lease: Lease, seconds: float, *, renew: bool, progress: bool = True) -> None:
    """A loop pass that runs ``seconds`` between two syncs, with or without ``renewing``, reporting
    progress every 0.1 s or never."""
    if not renew:
        await asyncio.sleep(seconds)
        return
    async with renewing(lease) as made:
        for _ in range(round(seconds / 0.1)):
            await asyncio.sleep(0.1)
            if progress:
                made.made()


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
@pytest.mark.parametrize("renew", [True, False])
async def test_a_pass_slower_than_the_ttl_keeps_its_leases_while_renewing(
    make: MakeLease, renew: bool
) -> None:
    """A cold pass over many deployments outlasts the TTL (5–8 s against 3 s for 1,000 deployments on a
    loaded machine). Renewing beside it, the holder keeps its leases and their epochs; without, the server
    ends the idle session, and the next sync finds its leases gone and takes them again (a new epoch,
    which a standby could have taken first). A TTL of 1.5 s: renewals every 0.5 s leave 1 s of slack
    on a loaded machine."""
    ttl_s = 1.5
    a, b = make("a", ttl_s), make("b", ttl_s)
    assert isinstance(a, PostgresAdvisoryLease)
    assert await a.sync(["x", "y"]) == {"x", "y"}
    epoch = a.epoch("x")
    await _pass(a, 3 * ttl_s, renew=renew)
    if renew:
        assert await b.sync(["x", "y"]) == frozenset()  # a's locks held all along
        assert await a.sync(["x", "y"]) == {"x", "y"}
        assert (a.epoch("x"), a.connects) == (epoch, 1)
    else:
        assert await b.sync(["x", "y"]) == {"x", "y"}  # the standby took over during the pass
        assert await a.sync(["x", "y"]) == frozenset()


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_a_pass_that_blocks_its_event_loop_or_makes_no_progress_still_loses_its_leases(
    make: MakeLease,
) -> None:
    """Renewals run on the pass's event loop: a pass that holds it (as a hung process does) renews
    nothing, and one that awaits without reporting progress is not renewed; either way another holder
    takes over after the TTL."""
    ttl_s = 1.0
    a, b = make("a", ttl_s), make("b", ttl_s)
    assert await a.sync(["x"]) == {"x"}
    async with renewing(a):
        time.sleep(2.5 * ttl_s)  # the event loop held: no renewal gets in
    assert await b.sync(["x"]) == {"x"}
    await b.release_all()
    assert await a.sync(["x"]) == frozenset()  # a finds its session gone ...
    assert await a.sync(["x"]) == {"x"}  # ... and takes the name again on its next pass
    await _pass(a, 2.5 * ttl_s, renew=True, progress=False)
    assert await b.sync(["x"]) == {"x"}


async def test_renewing_a_lease_that_does_not_lapse_is_a_no_op(make: MakeLease) -> None:
    """Both kinds: the in-process table's names never lapse (its TTL is infinite), a database lease's
    renewal between syncs changes nothing it holds."""
    a = make("a")
    assert await a.sync(["x"]) == {"x"}
    epoch = a.epoch("x")
    async with renewing(a) as progress:
        await asyncio.sleep(0.05)
        progress.made()
    await a.renew()
    assert await a.sync(["x"]) == {"x"} and a.epoch("x") == epoch
