"""Recovery without collateral damage, on both backend pairs (issue 14): a placement restart or a database
outage with agents coming back keeps every replica (same ids, no stop command); a node whose agent does
not come back is judged lost only after the grace; an agent that returns after its replicas were replaced
stops the originals and the overlap is reported; a pool placement cannot fill says why (describe, metric,
event). The reconciler is driven by hand on the runtime's virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.clock import VirtualClock
from opscale.db.repo import AuditRepo, DeploymentRepo
from opscale.errors import Unavailable
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.services.placement.app import PlacementApp, PlacementConfig
from opscale.services.placement.metrics import placement_metrics
from opscale.services.placement.wiring import build_for
from opscale.services.runtime import Runtime
from tests.component.cli_kit import Cli
from tests.component.decision_kit import start_replica
from tests.component.test_placement_stream import SPEC, ScriptedAgent, apply, replicas, settle

LOST_S = 10.0
RECONNECT_MAX_S = 5.0
GRACE_S = LOST_S + RECONNECT_MAX_S  # PlacementConfig.recovery_grace_s
CONFIG = PlacementConfig(
    lost_timeout_s=LOST_S, reconcile_interval_s=3600, agent_reconnect_max_s=RECONNECT_MAX_S
)


class Placement:
    """Start, stop and restart placement processes (PlacementApp + gRPC server) over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app: PlacementApp | None = None
        self.running: RunningService | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self, sessions: Any = None) -> PlacementApp:
        rt = self.runtime
        self.app = PlacementApp(
            sessions or rt.sessions, rt.clock, CONFIG, metrics=placement_metrics(rt.telemetry.registry)
        )
        self.running = await start_service(build_for(self.app), "127.0.0.1", 0, rt.telemetry)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.running.port}")
        return self.app

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.running is not None:
            await stop_service(self.running, 1.0)
        self.channel = self.running = None

    @property
    def stub(self) -> placement_pb2_grpc.PlacementServiceStub:
        return placement_pb2_grpc.PlacementServiceStub(self.channel)

    @property
    def agents(self) -> agent_pb2_grpc.AgentServiceStub:
        return agent_pb2_grpc.AgentServiceStub(self.channel)


@pytest.fixture
async def placement(runtime: Runtime) -> AsyncIterator[Placement]:
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session, clock=runtime.clock).create("d1", SPEC, "test")
    p = Placement(runtime)
    try:
        yield p
    finally:
        await p.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:  # the agent streams' tasks unwind before the loop closes (see test_placement_stream)
            await asyncio.wait(others, timeout=5.0)


def advance(runtime: Runtime, seconds: float) -> None:
    assert isinstance(runtime.clock, VirtualClock)
    runtime.clock.advance(seconds)


async def resume(agent: ScriptedAgent, placement: Placement) -> list[str]:
    """The same agent process reconnecting to (a new) placement: same session, its replicas claimed."""
    await agent.close()
    agent.stub, agent.outbox = placement.agents, asyncio.Queue()
    agent.claims = sorted(agent.running)
    ack = await agent.connect()
    return list(ack.stop_replica_ids)


def stops(*agents: ScriptedAgent) -> list[str]:
    return [c.replica_id for a in agents for c in a.commands if c.WhichOneof("action") in ("stop", "drain")]


async def all_ready(placement: Placement, n: int) -> bool:
    got = await replicas(placement.stub)
    return sum(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got) == n


async def test_placement_restart_keeps_every_replica(placement: Placement, runtime: Runtime) -> None:
    app = await placement.start()
    a, b = ScriptedAgent("n1", 2, placement.agents), ScriptedAgent("n2", 2, placement.agents)
    await a.connect()
    await b.connect()
    await placement.stub.ApplyDesired(apply(3))
    await settle(app, lambda: all_ready(placement, 3))
    before = {r.id: r.node for r in await replicas(placement.stub)}

    # Placement goes away for a minute: every heartbeat in the database is 60 s old when it is back.
    await placement.stop()
    advance(runtime, 60)
    app = await placement.start()
    await app.reconciler.reconcile_once()  # agents not back yet: within the grace, nobody is lost
    assert app.reconciler.grace_left_s() == pytest.approx(GRACE_S)
    nodes = (await placement.stub.ListNodes(pb.ListNodesRequest())).nodes
    assert {n.status for n in nodes} == {pb.NODE_STATUS_READY}

    advance(runtime, RECONNECT_MAX_S)  # the agents' back-off ends: they reconnect, claiming their replicas
    assert await resume(a, placement) == [] and await resume(b, placement) == []
    advance(runtime, LOST_S)  # the grace is over and both beat
    await a.beat()
    await b.beat()
    await settle(app, lambda: _beats_seen(app, ("n1", "n2")))
    for _ in range(3):
        await app.reconciler.reconcile_once()
    after = {r.id: r.node for r in await replicas(placement.stub) if r.desired_state == 1}
    assert after == before  # the same replicas on the same nodes
    assert stops(a, b) == []  # and not one stop or drain was sent
    assert all(c.WhichOneof("action") == "start" for c in a.commands + b.commands)
    assert len(a.commands) + len(b.commands) == 3  # the original starts only
    await a.close()
    await b.close()


async def _beats_seen(app: PlacementApp, nodes: tuple[str, ...]) -> bool:
    sessions = [app.registry.get(n) for n in nodes]
    return all(s is not None and s.seq >= 1 for s in sessions)


class FlakySessions:
    """The runtime's session factory, made to fail like an unreachable database while ``down``."""

    def __init__(self, sessions: Callable[[], Any]) -> None:
        self._sessions = sessions
        self.down = False

    def __call__(self) -> Any:
        if self.down:
            raise Unavailable("connect to database: connection refused (test outage)")
        return self._sessions()


async def test_database_outage_restarts_the_grace_then_a_gone_node_is_lost(
    placement: Placement, runtime: Runtime
) -> None:
    sessions = FlakySessions(runtime.sessions)
    app = await placement.start(sessions)
    a, b = ScriptedAgent("n1", 1, placement.agents), ScriptedAgent("n2", 1, placement.agents)
    await a.connect()
    await b.connect()
    await placement.stub.ApplyDesired(apply(2))
    await settle(app, lambda: all_ready(placement, 2))
    advance(runtime, GRACE_S)  # the start-up grace is over

    sessions.down = True  # 40 s without a database; n2's agent dies meanwhile, n1's streams on
    await b.close()
    for _ in range(4):
        advance(runtime, 10)
        await a.beat()
        with pytest.raises(Unavailable):
            await app.reconciler.reconcile_once()
    sessions.down = False
    await app.reconciler.reconcile_once()  # database back: the grace starts again, n2 is not lost yet
    assert app.reconciler.grace_left_s() == pytest.approx(GRACE_S)
    node = (await placement.stub.GetNode(pb.GetNodeRequest(name="n2"))).node
    assert node.status == pb.NODE_STATUS_READY

    advance(runtime, GRACE_S)  # n2 never came back: lost now, its replica re-placed; n1 keeps its own
    await a.beat()
    await settle(app, lambda: _beats_seen(app, ("n1",)))
    await app.reconciler.reconcile_once()
    assert (await placement.stub.GetNode(pb.GetNodeRequest(name="n2"))).node.status == pb.NODE_STATUS_LOST
    assert (await placement.stub.GetNode(pb.GetNodeRequest(name="n1"))).node.status == pb.NODE_STATUS_READY
    assert stops(a) == []
    await a.close()


async def test_a_returning_agent_stops_superseded_originals_and_reports_the_overlap(
    placement: Placement, runtime: Runtime
) -> None:
    app = await placement.start()
    a, b = ScriptedAgent("n1", 1, placement.agents), ScriptedAgent("n2", 1, placement.agents)
    await a.connect()
    await placement.stub.ApplyDesired(apply(1))
    await settle(app, lambda: all_ready(placement, 1))
    original = next(iter(a.running))
    await b.connect()
    advance(runtime, GRACE_S)
    await a.beat()  # n1's last heartbeat, written by the next pass
    await settle(app, lambda: _beats_seen(app, ("n1",)))
    await app.reconciler.reconcile_once()
    await a.close()  # n1's agent is away (its worker keeps running) past the lost timeout...
    advance(runtime, LOST_S + 1)
    await b.beat()
    await settle(app, lambda: _beats_seen(app, ("n2",)))
    await app.reconciler.reconcile_once()  # ...but not past the grace: placement waits for it
    assert (await placement.stub.GetNode(pb.GetNodeRequest(name="n1"))).node.status == pb.NODE_STATUS_READY
    advance(runtime, RECONNECT_MAX_S)
    await b.beat()
    await settle(app, lambda: _beats_seen(app, ("n2",)))
    await app.reconciler.reconcile_once()
    assert (await placement.stub.GetNode(pb.GetNodeRequest(name="n1"))).node.status == pb.NODE_STATUS_LOST
    await settle(app, lambda: _started_on(b))  # the replacement runs on n2

    advance(runtime, 7)
    a.stub, a.outbox = placement.agents, asyncio.Queue()
    a.claims = [original]
    ack = await a.connect()  # n1 returns with the original: told to stop it at once
    assert list(ack.stop_replica_ids) == [original]
    metrics = placement_metrics(runtime.telemetry.registry)
    assert metrics.superseded_replicas._value.get() >= 1
    async with runtime.sessions() as session:
        events = await AuditRepo(session, clock=runtime.clock).list(kind="node", name="n1")
    overlap = next(e for e in events if e.action == "stop_superseded")
    assert overlap.after is not None and overlap.after["replicas"] == [original]
    assert overlap.after["overlap_s"] == pytest.approx(7, abs=0.5)  # judged lost 7 s before it returned
    await a.close()
    await b.close()


async def _started_on(agent: ScriptedAgent) -> bool:
    return bool(agent.running)


async def test_a_pool_placement_cannot_fill_is_visible(
    placement: Placement, runtime: Runtime, tmp_path: Path
) -> None:
    app = await placement.start()
    crashy = ScriptedAgent("n1", 1, placement.agents, crash_on_start=True)
    await crashy.connect()
    reply = await placement.stub.ApplyDesired(apply(3))  # one GPU for three replicas: 1 fits
    assert [(i.requested, i.satisfiable) for i in reply.infeasible] == [(3, 1)]
    await settle(app, lambda: _failed(placement))
    await app.reconciler.reconcile_once()  # the refused start is retired and the pool re-assessed

    got = await placement.stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))
    [short] = got.shortfalls
    assert (short.deployment, short.target, short.ready) == ("d1", 3, 0)
    assert "failed" in short.reason or "fits" in short.reason
    gauge = placement_metrics(runtime.telemetry.registry).pool_shortfall
    assert gauge.labels("d1", "serving", "model")._value.get() == 3
    async with runtime.sessions() as session:
        events = await AuditRepo(session, clock=runtime.clock).list(kind="pool", name="d1/serving/model")
    assert events and events[-1].action == "shortfall" and events[-1].after is not None
    assert events[-1].after["target"] == 3 and events[-1].after["ready"] == 0

    decision = await start_replica(runtime, "r1")
    assert placement.running is not None
    cli = Cli(
        tmp_path,
        decision=f"127.0.0.1:{decision.running.port}",
        placement=f"127.0.0.1:{placement.running.port}",
    )
    try:
        described = await cli.ok("describe", "deployment", "d1")
        assert "Short of target" in described and "0 of 3" in described
        data = await cli.json("describe", "deployment", "d1")
        assert data["shortfalls"][0]["target"] == 3 and data["shortfalls"][0]["reason"]
    finally:
        await decision.stop()
        await crashy.close()


async def _failed(placement: Placement) -> bool:
    got = await replicas(placement.stub)
    return any(r.observed_state == pb.REPLICA_OBSERVED_STATE_FAILED for r in got)
