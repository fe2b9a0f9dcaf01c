"""Two decision replicas over one database: exactly one acts per deployment, a watcher on the other
still receives every decision, and when the leader goes the other takes over, continuing from the last
recorded decision without deciding any tick twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.services.decision.lease import PostgresAdvisoryLease
from opscale.services.runtime import Runtime
from tests.component.decision_kit import (
    DECODE_PB,
    PREFILL_PB,
    Replica,
    advance,
    counts,
    decisions,
    eventually,
    pd_spec,
    push_load,
    start_replica,
)


async def _settled(replica: Replica, name: str, n: int) -> bool:
    found = await decisions(replica.stub, name)
    return len(found) > n and found[0].placement_outcome != pb.PLACEMENT_OUTCOME_PENDING


async def _next_decision(replica: Replica, runtime: Runtime, name: str) -> pb.Decision:
    n = len(await decisions(replica.stub, name))
    advance(runtime, 1)
    await eventually(lambda: _settled(replica, name, n))
    return (await decisions(replica.stub, name))[0]


def _no_tick_twice(history: list[pb.Decision]) -> None:
    ticks = [d.tick_ms for d in history]
    assert len(set(ticks)) == len(ticks), ticks


async def _two_replicas(runtime: Runtime, name: str) -> tuple[Replica, Replica]:
    a = await start_replica(runtime, "a")
    await a.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec(name)), timeout=5)
    await eventually(lambda: _settled(a, name, 0))  # a leads and has decided the first slot
    assert name in a.service.loop.held
    b = await start_replica(runtime, "b")
    return a, b


async def test_one_leader_reads_everywhere_and_clean_takeover(runtime: Runtime) -> None:
    a, b = await _two_replicas(runtime, "chat")
    try:
        watch = b.stub.WatchDecisions(pb.WatchDecisionsRequest(deployments=["chat"]), timeout=15)
        await eventually(lambda: b.service.hub.watching)
        await push_load(runtime, "chat", decode_tps=4000)
        by_a = await _next_decision(b, runtime, "chat")  # read on b, decided by a
        assert by_a.leader_id == "a" and counts(by_a) == {DECODE_PB: 4, PREFILL_PB: 2}
        assert "chat" not in b.service.loop.held
        seen = await watch.read()
        while seen.decision.id != by_a.id:  # the first slot's decision may come first
            seen = await watch.read()
        assert seen.decision.leader_id == "a"

        await a.stop()  # a clean stop releases a's leases
        await eventually(lambda: "chat" in b.service.loop.held)
        by_b = await _next_decision(b, runtime, "chat")
        assert by_b.leader_id == "b"
        # b continued from a's last decision: the plan in force was a's.
        assert counts(by_b) == counts(by_a)
        assert {(p.pool.stage, p.pool.operator): p.replicas for p in by_b.previous_pools} == counts(by_a)
        received = [seen.decision.id]
        while seen.decision.id != by_b.id:
            seen = await watch.read()
            received.append(seen.decision.id)
        assert len(set(received)) == len(received)  # each decision once, none twice
        history = await decisions(b.stub, "chat")
        _no_tick_twice(history)
        assert {d.leader_id for d in history} == {"a", "b"}
        watch.cancel()
    finally:
        await b.stop()
        await a.stop()


async def test_both_running_never_decide_a_tick_twice(runtime: Runtime) -> None:
    a, b = await _two_replicas(runtime, "busy")
    try:
        for _ in range(5):
            await _next_decision(a, runtime, "busy")
        history = await decisions(a.stub, "busy")
        _no_tick_twice(history)
        assert {d.leader_id for d in history} == {"a"}
    finally:
        await a.stop()
        await b.stop()


# Advisory locks are PostgreSQL's; SQLite's in-process lock table dies with its process, so these two
# run on the production pair only (the fixture is narrowed, not skipped).
@pytest.mark.parametrize("runtime", ["postgres-redis"], indirect=True)
async def test_leader_crash_releases_the_advisory_lock(runtime: Runtime) -> None:
    """Postgres only: the leader's lease connection dies without unlocking (a crash); the server drops
    its advisory locks with the connection and the other replica takes over within a few seconds."""
    a, b = await _two_replicas(runtime, "crashy")
    try:
        lease = a.service.lease
        assert isinstance(lease, PostgresAdvisoryLease)
        by_a = await _next_decision(a, runtime, "crashy")
        assert by_a.leader_id == "a"
        pid = await lease.backend_pid()

        async def no_release() -> None:  # a crash runs no clean-up
            return None

        lease.release_all = no_release  # type: ignore[method-assign]
        await a.stop()  # the loop is gone ...
        async with runtime.engine.connect() as conn:  # ... and so is its connection
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await eventually(lambda: "crashy" in b.service.loop.held, timeout_s=5)
        by_b = await _next_decision(b, runtime, "crashy")
        assert by_b.leader_id == "b" and int(by_b.id) > int(by_a.id)
        _no_tick_twice(await decisions(b.stub, "crashy"))
    finally:
        await b.stop()
        if isinstance(a.service.lease, PostgresAdvisoryLease):
            await a.service.lease._discard()  # the "crashed" replica's dead connection, for a clean exit


@pytest.mark.parametrize("runtime", ["postgres-redis"], indirect=True)
async def test_a_running_leader_recovers_from_a_dropped_lease_connection(runtime: Runtime) -> None:
    """Postgres only: the connection under the leases dies while the replica keeps running (a database
    fail-over, a network blip). The replica drops its leases, reconnects on the next tick, takes them
    again and keeps deciding."""
    a = await start_replica(runtime, "a")
    try:
        await a.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("blip")), timeout=5)
        await eventually(lambda: _settled(a, "blip", 0))
        lease = a.service.lease
        assert isinstance(lease, PostgresAdvisoryLease)
        pid, connects = await lease.backend_pid(), lease.connects
        async with runtime.engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await eventually(lambda: lease.connects > connects and "blip" in lease.held)
        after = await _next_decision(a, runtime, "blip")
        assert after.leader_id == "a"
        _no_tick_twice(await decisions(a.stub, "blip"))
    finally:
        await a.stop()


@pytest.mark.parametrize("runtime", ["postgres-redis"], indirect=True)
async def test_a_hung_leader_is_deposed_within_the_ttl_and_its_late_write_refused(runtime: Runtime) -> None:
    """Postgres only: the leader hangs half-way through a tick (what SIGSTOP, a long pause or a partition
    look like), holding a decision it has not written yet. With the default TTL the server ends its
    silent lease session and the standby takes over within 5 s; when the old leader wakes up and writes,
    the lease epoch refuses the write although its slot is free in the ledger."""
    a, b = await _two_replicas(runtime, "hung")
    try:
        record = a.service.loop._record
        hung, wake, woke = asyncio.Event(), asyncio.Event(), asyncio.Event()
        slots: list[float] = []

        async def hangs_before_writing(due: Any) -> Any:
            slots.extend(d.slot for d in due)
            hung.set()
            await wake.wait()
            try:
                return await record(due)
            finally:
                woke.set()

        a.service.loop._record = hangs_before_writing  # type: ignore[method-assign]
        advance(runtime, 1)  # a's next slot is due: a decides it, then hangs
        await eventually(hung.is_set)
        stopped = time.monotonic()
        advance(runtime, 1)  # the standby's first slot is a later one: a's stays free in the ledger
        await eventually(lambda: "hung" in b.service.loop.held, timeout_s=10)
        took_s = time.monotonic() - stopped
        print(f"takeover after the leader hung: {took_s:.2f} s")
        assert took_s <= 5.0, f"takeover took {took_s:.1f} s"
        await eventually(lambda: _settled(b, "hung", 1))
        wake.set()
        await eventually(woke.is_set)
        history = await decisions(b.stub, "hung")
        assert slots and round(slots[0] * 1000) not in {d.tick_ms for d in history}
        assert history[0].leader_id == "b"
        _no_tick_twice(history)
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("runtime", ["postgres-redis"], indirect=True)
async def test_a_leader_whose_pass_outlasts_the_ttl_keeps_its_leases(runtime: Runtime) -> None:
    """Postgres only: a pass that keeps working for longer than the lease's TTL (here eight plans of
    0.6 s one after the other, 4.8 s against the default 3 s; the cold pass over 1,000 deployments takes
    5-8 s on a loaded machine) renews its lease as it goes: the standby takes nothing over, the leader's
    lease connection and epochs stay as they were, and no tick is decided twice."""
    names = [f"slow-{i}" for i in range(8)]
    a = await start_replica(runtime, "a")
    try:
        for name in names:
            await a.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec(name)), timeout=5)
        for name in names:
            await eventually(lambda name=name: _settled(a, name, 0))
        b = await start_replica(runtime, "b")
        lease = a.service.lease
        assert isinstance(lease, PostgresAdvisoryLease)
        connects, epochs = lease.connects, {n: lease.epoch(n) for n in names}
        plan, one_at_a_time = a.service.loop._plan, asyncio.Lock()

        async def slow_plan(*args: Any) -> Any:
            async with one_at_a_time:
                await asyncio.sleep(0.6)
                return await plan(*args)

        a.service.loop._plan = slow_plan  # type: ignore[method-assign]
        started = time.monotonic()
        advance(runtime, 1)
        for name in names:
            await eventually(lambda name=name: _settled(a, name, 1), timeout_s=15)
        took_s = time.monotonic() - started
        assert not b.service.loop.held
        assert lease.connects == connects and {n: lease.epoch(n) for n in names} == epochs
        for name in names:
            history = await decisions(a.stub, name)
            assert {d.leader_id for d in history} == {"a"}
            _no_tick_twice(history)
        assert took_s > 4.0  # the pass did outlast the TTL
        await b.stop()
    finally:
        await a.stop()
