"""Contract suite for opscale.db.repo: every repository operation, on SQLite and on PostgreSQL.

Schema comes from the Alembic migrations (never create_all). Each ``tx`` block is one transaction the
test (standing in for the app layer) commits; a raised error rolls it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import VirtualClock
from opscale.db import migrate
from opscale.db.engine import make_async_engine, session_factory
from opscale.db.records import DecisionRecord, GpuRecord
from opscale.db.repo import (
    AuditRepo,
    CommandRepo,
    DecisionRepo,
    DeploymentRepo,
    NodeRepo,
    ProfileRepo,
    ReplicaRepo,
)
from opscale.db.status import CommandKind, CommandStatus, NodeStatus, ReplicaDesired, ReplicaObserved
from opscale.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, StaleVersion

T0 = 1_800_000_000.0  # a whole second, so stored timestamps compare exactly on both backends
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    await asyncio.to_thread(migrate.upgrade, db_url)
    engine = make_async_engine(db_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start_s=T0)


@asynccontextmanager
async def tx(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    async with sessions() as session, session.begin():
        yield session


def at(clock: VirtualClock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


def gpus(n: int, gpu_type: str = "H100") -> list[GpuRecord]:
    return [GpuRecord(i, f"GPU-{gpu_type}-{i}", gpu_type, 80 * 2**30, "nvl0", {"slot": i}) for i in range(n)]


def decision(deployment: str, tick: datetime, **overrides: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "deployment": deployment,
        "spec_version": 1,
        "tick_at": tick,
        "policy": "operator",
        "policy_version": "1.0",
        "inputs": {"rps": 12.5},
        "outputs": {"attention": 3},
        "reasons": ["ttft p99 above target"],
        "predicted": {"ttft_ms": 180.0, "tbt_ms": 25.0, "gpus": 4, "watts": 2800.0},
        "stabilizer": {"held": False},
        "leader_id": "decision-0",
    }
    return DecisionRecord(**(fields | overrides))


SPEC = {"model": "llama3-8b", "slo": {"ttft_ms": 200, "tbt_ms": 30}}


# --- deployments -------------------------------------------------------------------------------


async def test_deployment_create_get_list_history_and_audit(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        created = await DeploymentRepo(s, clock=clock).create("chat", SPEC, actor="alice")
    assert (created.name, created.version, created.spec, created.frozen) == ("chat", 1, SPEC, False)
    assert created.created_at == at(clock) and created.created_at.tzinfo is UTC
    async with tx(sessions) as s:
        repo = DeploymentRepo(s, clock=clock)
        assert await repo.get("chat") == created
        assert [d.name for d in await repo.list()] == ["chat"]
        assert [(v.version, v.created_by) for v in await repo.history("chat")] == [(1, "alice")]
        (entry,) = await AuditRepo(s).list(kind="deployment", name="chat")
    assert (entry.actor, entry.action, entry.before) == ("alice", "create", None)
    assert entry.after == {"version": 1, "frozen": False, "spec": SPEC}


async def test_deployment_name_taken(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        await DeploymentRepo(s).create("chat", SPEC, actor="alice")
    with pytest.raises(AlreadyExists, match="chat"):
        async with tx(sessions) as s:
            await DeploymentRepo(s).create("chat", {}, actor="bob")


async def test_deployment_update_is_compare_and_swap(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        await DeploymentRepo(s).create("chat", SPEC, actor="alice")
    async with tx(sessions) as s:
        updated = await DeploymentRepo(s).update(
            "chat", {"model": "llama3-70b"}, expected_version=1, actor="bob"
        )
    assert updated.version == 2
    with pytest.raises(StaleVersion) as info:
        async with tx(sessions) as s:
            await DeploymentRepo(s).update("chat", {"model": "x"}, expected_version=1, actor="carol")
    assert (info.value.expected, info.value.actual) == (1, 2)
    async with tx(sessions) as s:
        repo = DeploymentRepo(s)
        assert (await repo.get("chat")).spec == {"model": "llama3-70b"}  # carol wrote nothing
        assert (await repo.get("chat", version=1)).spec == SPEC
        assert [v.version for v in await repo.history("chat")] == [2, 1]
        actions = [(e.action, e.actor) for e in await AuditRepo(s).list(name="chat")]
    assert actions == [("update", "bob"), ("create", "alice")]


async def test_deployment_concurrent_updates_one_wins(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        await DeploymentRepo(s).create("chat", SPEC, actor="alice")

    async def update(actor: str) -> int | StaleVersion:
        try:
            async with tx(sessions) as s:
                return (await DeploymentRepo(s).update("chat", {"by": actor}, 1, actor=actor)).version
        except StaleVersion as exc:
            return exc

    results = await asyncio.gather(update("bob"), update("carol"))
    assert sorted(r if isinstance(r, int) else -1 for r in results) == [-1, 2]
    (lost,) = [r for r in results if isinstance(r, StaleVersion)]
    assert (lost.expected, lost.actual) == (1, 2)


async def test_deployment_not_found(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        repo = DeploymentRepo(s)
        with pytest.raises(NotFound):
            await repo.get("nope")
        with pytest.raises(NotFound):
            await repo.update("nope", SPEC, 1, actor="a")
        with pytest.raises(NotFound):
            await repo.delete("nope", None, actor="a")
        with pytest.raises(NotFound):
            await repo.set_frozen("nope", True, actor="a")
        await repo.create("chat", SPEC, actor="a")
        with pytest.raises(NotFound, match="no version 7"):
            await repo.get("chat", version=7)


async def test_deployment_soft_delete_and_recreate_continues_versions(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        repo = DeploymentRepo(s)
        await repo.create("chat", SPEC, actor="alice")
        await repo.update("chat", {"v": 2}, 1, actor="alice")
    with pytest.raises(StaleVersion):
        async with tx(sessions) as s:
            await DeploymentRepo(s).delete("chat", expected_version=1, actor="bob")
    async with tx(sessions) as s:
        repo = DeploymentRepo(s)
        await repo.delete("chat", expected_version=2, actor="bob")
        assert await repo.list() == []
        with pytest.raises(NotFound):
            await repo.get("chat")
        assert [v.version for v in await repo.history("chat")] == [2, 1]  # kept for the ledger
        (entry, *_) = await AuditRepo(s).list(name="chat")
        assert (entry.action, entry.after) == ("delete", None)
        assert entry.before is not None and entry.before["version"] == 2
        again = await repo.create("chat", {"v": 3}, actor="carol")
    assert again.version == 3  # (name, version) is never reused


async def test_deployment_freeze(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        repo = DeploymentRepo(s)
        await repo.create("chat", SPEC, actor="alice")
        frozen = await repo.set_frozen("chat", True, actor="sre")
        assert frozen.frozen and frozen.version == 1  # not a spec change
        await repo.set_frozen("chat", True, actor="sre")  # no-op: no second audit row
        await repo.set_frozen("chat", False, actor="sre")
        actions = [e.action for e in await AuditRepo(s).list(name="chat")]
    assert actions == ["unfreeze", "freeze", "create"]


@pytest.mark.parametrize(
    ("name", "spec"),
    [("", SPEC), ("x" * 64, SPEC), ("chat", ["not", "an", "object"]), ("chat", {"bad": float("nan")})],
)
async def test_deployment_invalid_input(sessions: Sessions, name: str, spec: Any) -> None:
    async with tx(sessions) as s:
        with pytest.raises(InvalidArgument):
            await DeploymentRepo(s).create(name, spec, actor="alice")


# --- nodes ---------------------------------------------------------------------------------------


async def register(
    s: AsyncSession, clock: VirtualClock, name: str = "n1", n: int = 2, sid: str = "s1"
) -> Any:
    labels = {"zone": "z1", "s2": "a", "s1": "b", "s0": "rack3", "nvlink_domain": "nvl0"}
    return await NodeRepo(s, clock=clock).register(name, gpus=gpus(n), labels=labels, agent_session_id=sid)


async def test_node_register_get_list(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        node = await register(s, clock)
    assert (node.status, node.version, node.agent_session_id) == (NodeStatus.REGISTERING, 1, "s1")
    assert node.gpus == tuple(gpus(2)) and node.labels["s0"] == "rack3"
    assert node.registered_at == node.last_heartbeat_at == at(clock)
    async with tx(sessions) as s:
        assert await NodeRepo(s).get("n1") == node
        assert await NodeRepo(s).list() == [node]
        assert await NodeRepo(s).list(status=NodeStatus.READY) == []
        with pytest.raises(NotFound):
            await NodeRepo(s).get("n2")
        assert [e.action for e in await AuditRepo(s).list(kind="node")] == ["register"]


async def test_node_status_cas_and_transitions(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        await register(s, clock)
        ready = await NodeRepo(s, clock=clock).set_status(
            "n1", NodeStatus.READY, expected_version=1, actor="p"
        )
    assert (ready.status, ready.version) == (NodeStatus.READY, 2)
    with pytest.raises(StaleVersion) as info:
        async with tx(sessions) as s:
            await NodeRepo(s).set_status("n1", NodeStatus.CORDONED, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(FailedPrecondition, match="'ready' to 'decommissioned'"):
        async with tx(sessions) as s:
            await NodeRepo(s).set_status("n1", NodeStatus.DECOMMISSIONED, expected_version=2)
    async with tx(sessions) as s:
        assert await NodeRepo(s).get("n1") == ready  # nothing written by the refused moves
        assert [e.action for e in await AuditRepo(s).list(kind="node")] == ["set_status", "register"]
        with pytest.raises(NotFound):
            await NodeRepo(s).set_status("ghost", NodeStatus.READY, expected_version=1)


async def test_node_reregister_replaces_gpus_and_keeps_a_cordon(
    sessions: Sessions, clock: VirtualClock
) -> None:
    async with tx(sessions) as s:
        await register(s, clock, "n1")
        await register(s, clock, "n2")
        await NodeRepo(s).set_status("n1", NodeStatus.READY, 1)
        await NodeRepo(s).set_status("n2", NodeStatus.READY, 1)
        await NodeRepo(s).set_status("n2", NodeStatus.CORDONED, 2)
    clock.advance(60)
    async with tx(sessions) as s:
        n1 = await register(s, clock, "n1", n=1, sid="s2")
        n2 = await register(s, clock, "n2", n=3, sid="s3")
    assert (n1.status, n1.version, n1.agent_session_id) == (NodeStatus.REGISTERING, 3, "s2")
    assert [g.index for g in n1.gpus] == [0] and [g.index for g in n2.gpus] == [0, 1, 2]
    assert n2.status is NodeStatus.CORDONED  # an agent restart does not undo an SRE's cordon
    assert n1.registered_at == at(clock)


async def test_node_heartbeat(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        await register(s, clock, "n1")
        await register(s, clock, "n2")
    later = at(clock) + timedelta(seconds=30)
    async with tx(sessions) as s:
        repo = NodeRepo(s)
        await repo.heartbeat("n1", later, agent_session_id="s1")
        node = await repo.get("n1")
        assert node.last_heartbeat_at == later and node.version == 1  # heartbeats never make CAS stale
        assert [n.name for n in await repo.list(heartbeat_before=later)] == ["n2"]
        with pytest.raises(FailedPrecondition, match="session"):
            await repo.heartbeat("n1", later, agent_session_id="old-session")
        with pytest.raises(NotFound):
            await repo.heartbeat("ghost", later)
        with pytest.raises(InvalidArgument):
            await repo.heartbeat("n1", datetime(2030, 1, 1))  # naive: zone unknown


async def test_node_invalid_gpus(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        with pytest.raises(InvalidArgument, match="repeated"):
            await NodeRepo(s).register("n1", gpus=[*gpus(1), *gpus(1)], labels={}, agent_session_id="s")


# --- decisions and audit -------------------------------------------------------------------------


async def test_decision_ledger(sessions: Sessions, clock: VirtualClock) -> None:
    ticks = [at(clock) + timedelta(seconds=i) for i in range(5)]
    async with tx(sessions) as s:
        repo = DecisionRepo(s)
        assert await repo.latest("chat") is None
        stored = [await repo.append(decision("chat", t, spec_version=2)) for t in ticks]
        await repo.append(decision("other", ticks[-1] + timedelta(seconds=9)))
    assert all(d.id is not None for d in stored)
    async with tx(sessions) as s:
        repo = DecisionRepo(s)
        assert await repo.latest("chat") == stored[-1]
        assert [d.tick_at for d in await repo.history("chat", limit=2)] == [ticks[4], ticks[3]]
        assert await repo.history("chat", before_tick=ticks[2]) == [stored[1], stored[0]]
        assert await repo.prune(older_than=ticks[3]) == 3
        assert [d.tick_at for d in await repo.history("chat")] == [ticks[4], ticks[3]]
        with pytest.raises(InvalidArgument, match="between 1 and 1000"):
            await repo.history("chat", limit=0)
        with pytest.raises(InvalidArgument):
            await repo.append(decision("chat", ticks[0], reasons="not a list"))


async def test_audit_filters_and_paging(sessions: Sessions) -> None:
    async with tx(sessions) as s:
        repo = AuditRepo(s)
        for i in range(3):
            await repo.append("sre", "cordon", "node", f"n{i}", {"status": "ready"}, {"status": "cordoned"})
        await repo.append("bob", "create", "deployment", "n0", None, {"v": 1})
    async with tx(sessions) as s:
        repo = AuditRepo(s)
        assert [e.object_name for e in await repo.list(kind="node")] == ["n2", "n1", "n0"]
        assert [e.object_kind for e in await repo.list(name="n0")] == ["deployment", "node"]
        first = await repo.list(limit=2)
        rest = await repo.list(before_id=first[-1].id)
        assert len(first) == 2 and len(rest) == 2 and first[-1].id > rest[0].id


# --- replicas, commands, profiles ----------------------------------------------------------------


async def add_replica(s: AsyncSession, clock: VirtualClock, rid: str = "r1", node: str | None = "n1") -> Any:
    return await ReplicaRepo(s, clock=clock).create(
        rid, deployment="chat", stage="decode", operator="attention", node=node, gpu_indices=[0, 1]
    )


async def test_replica_lifecycle(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        await register(s, clock)
        created = await add_replica(s, clock)
        with pytest.raises(AlreadyExists):
            await add_replica(s, clock)
        with pytest.raises(NotFound):
            await add_replica(s, clock, "r2", node="ghost")
    assert (created.node, created.gpu_indices, created.generation, created.version) == ("n1", (0, 1), 1, 1)
    async with tx(sessions) as s:
        repo = ReplicaRepo(s, clock=clock)
        await repo.set_observed("r1", ReplicaObserved.STARTING, reason="agent ack")
        draining = await repo.set_desired(
            "r1", ReplicaDesired.DRAINING, expected_version=2, reason="scale-in"
        )
    assert (draining.generation, draining.version) == (2, 3)
    assert [(h.field, h.old, h.new) for h in draining.status_history] == [
        ("observed", "pending", "starting"),
        ("desired", "running", "draining"),
    ]
    with pytest.raises(StaleVersion) as info:
        async with tx(sessions) as s:
            await ReplicaRepo(s).set_desired("r1", ReplicaDesired.STOPPED, expected_version=2, reason="x")
    assert (info.value.expected, info.value.actual) == (2, 3)
    with pytest.raises(FailedPrecondition):
        async with tx(sessions) as s:
            await ReplicaRepo(s).set_observed("r1", ReplicaObserved.PENDING, reason="x")
    async with tx(sessions) as s:
        repo = ReplicaRepo(s)
        assert await repo.get("r1") == draining  # refused moves wrote nothing
        await repo.set_desired("r1", ReplicaDesired.STOPPED, 3, reason="drained")
        await repo.set_observed("r1", ReplicaObserved.STOPPED, reason="exited")
        assert await repo.list(deployment="chat") == []
        assert [r.id for r in await repo.list(node="n1", include_stopped=True)] == ["r1"]
        with pytest.raises(NotFound):
            await repo.get("ghost")


async def test_commands(sessions: Sessions, clock: VirtualClock) -> None:
    async with tx(sessions) as s:
        await register(s, clock)
        await add_replica(s, clock)
        repo = CommandRepo(s, clock=clock)
        first = await repo.enqueue(
            "r1/1/start",
            node="n1",
            replica_id="r1",
            generation=1,
            kind=CommandKind.START,
            payload={"gpus": [0, 1]},
        )
        assert (
            await repo.enqueue(
                "r1/1/start",
                node="n1",
                replica_id="r1",
                generation=1,
                kind=CommandKind.START,
                payload={"gpus": [0, 1]},
            )
            == first
        )  # idempotent
        with pytest.raises(AlreadyExists, match="idempotency_key"):
            await repo.enqueue(
                "r1/1/start", node="n1", replica_id="r1", generation=2, kind=CommandKind.STOP, payload={}
            )
        sent = await repo.set_status(first.id, CommandStatus.SENT)
        assert (sent.attempts, sent.sent_at) == (1, at(clock))
        newer = await repo.enqueue(
            "r1/2/drain", node="n1", replica_id="r1", generation=2, kind=CommandKind.DRAIN, payload={}
        )
        assert (await repo.get(first.id)).status is CommandStatus.SUPERSEDED
        assert await repo.pending("n1") == [newer]
        await repo.set_status(newer.id, CommandStatus.SENT)
        acked = await repo.set_status(newer.id, CommandStatus.ACKED)
        assert acked.acked_at == at(clock) and await repo.pending("n1") == []
        with pytest.raises(FailedPrecondition, match="terminal"):
            await repo.set_status(newer.id, CommandStatus.SENT)
        with pytest.raises(NotFound):
            await repo.get(10_000)


async def test_profiles(sessions: Sessions, clock: VirtualClock) -> None:
    key = {"model": "llama3-8b", "gpu_type": "H100", "stage": "decode", "operator": "attention"}
    async with tx(sessions) as s:
        repo = ProfileRepo(s, clock=clock)
        await repo.put(**key, profile={"points": [[1, 0.1]]}, source="shipped")
        replaced = await repo.put(**key, profile={"points": [[1, 0.2]]}, source="profiler")
        await repo.put(**(key | {"gpu_type": "A100"}), profile={}, source="roofline")
        assert (replaced.profile, replaced.source) == ({"points": [[1, 0.2]]}, "profiler")
        assert await repo.get(**key) == replaced
        assert [p.gpu_type for p in await repo.list(model="llama3-8b")] == ["A100", "H100"]
        assert len(await repo.list(gpu_type="H100")) == 1
        with pytest.raises(NotFound):
            await repo.get(**(key | {"stage": "prefill"}))
