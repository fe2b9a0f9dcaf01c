"""Placement over real gRPC with scripted agents: register, identity, ApplyDesired, two-phase scale-in,
lost nodes and re-placement, bad input. Runs on both backend pairs; the reconciler is driven by hand
(``reconcile_once``) on the runtime's virtual clock, so nothing waits on wall time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.common.v1 import common_pb2
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.clock import VirtualClock
from opscale.db.repo import DeploymentRepo
from opscale.db.status import NodeStatus
from opscale.grpcutil.server import start_service, stop_service
from opscale.services.placement.app import PlacementApp, PlacementConfig
from opscale.services.placement.wiring import build_for
from opscale.services.runtime import Runtime

H100 = 80 * 2**30  # 80 GiB, as the planner's GPU table has it (a replica fills the usable 90%)
SPEC = {
    "name": "d1",
    "model": {"preset": "llama3-8b"},
    "slo": {"ttft_ms": 1000, "tbt_ms": 100},
    "mode": "colocated",
}
SERVING_MODEL = common_pb2.PoolKey(stage=common_pb2.STAGE_SERVING, operator=common_pb2.OPERATOR_KIND_MODEL)
LOST_S = 10.0


@dataclass
class ScriptedAgent:
    """An agent that acks every command, reports starts READY, drains at once and stops on request."""

    name: str
    gpus: int
    stub: agent_pb2_grpc.AgentServiceStub
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    outbox: asyncio.Queue[apb.ConnectRequest | None] = field(default_factory=asyncio.Queue)
    running: dict[str, list[int]] = field(default_factory=dict)
    commands: list[apb.Command] = field(default_factory=list)
    call: object = None
    task: asyncio.Task[None] | None = None
    silent: bool = False  # receives commands but never acks or reports (a wedged agent)
    report_drained: bool = True
    crash_on_start: bool = False  # every process it starts fails for good at once
    claims: list[str] = field(default_factory=list)  # replica ids it says it runs when registering

    async def _requests(self) -> AsyncIterator[apb.ConnectRequest]:
        while (item := await self.outbox.get()) is not None:
            yield item

    async def connect(self) -> apb.RegisterAck:
        register = apb.Register(
            node_name=self.name,
            session_id=self.session_id,
            gpus=[
                apb.GpuInfo(index=i, uuid=f"{self.name}-{i}", gpu_type="H100", memory_bytes=H100)
                for i in range(self.gpus)
            ],
            labels={"zone": "z1", "s2": "a", "s1": "b", "s0": f"rack-{self.name}"},
            templates=["worker"],
            running=[
                apb.RunningReplica(replica_id=r, generation=1, pid=1, state=apb.REPLICA_PROCESS_STATE_READY)
                for r in self.claims
            ],
        )
        await self.outbox.put(apb.ConnectRequest(register=register))
        call = self.stub.Connect(self._requests())
        self.call = call
        first = await call.read()
        assert first.WhichOneof("message") == "register_ack", first
        self.task = asyncio.create_task(self._serve(call))
        return first.register_ack

    async def _serve(self, call: grpc.aio.StreamStreamCall[apb.ConnectRequest, apb.ConnectResponse]) -> None:
        while (response := await call.read()) is not grpc.aio.EOF:
            command = response.command
            self.commands.append(command)
            if self.silent:
                continue
            ack = apb.CommandAck(
                command_id=command.command_id,
                replica_id=command.replica_id,
                generation=command.generation,
                status=apb.ACK_STATUS_ACCEPTED,
            )
            await self.outbox.put(apb.ConnectRequest(ack=ack))
            action = command.WhichOneof("action")
            state, drained = apb.REPLICA_PROCESS_STATE_READY, False
            if action == "start" and self.crash_on_start:
                state = apb.REPLICA_PROCESS_STATE_FAILED
            elif action == "start":
                self.running[command.replica_id] = list(command.start.gpu_indices)
            elif action == "drain":
                state, drained = apb.REPLICA_PROCESS_STATE_DRAINING, self.report_drained
            else:
                self.running.pop(command.replica_id, None)
                state = apb.REPLICA_PROCESS_STATE_STOPPED
            status = apb.ReplicaStatus(
                replica_id=command.replica_id, generation=command.generation, state=state, drained=drained
            )
            await self.outbox.put(apb.ConnectRequest(status=status))

    async def beat(self) -> None:
        gpu = common_pb2.GpuTelemetry(index=0, utilization_fraction=0.5, power_watts=400.0)
        await self.outbox.put(apb.ConnectRequest(heartbeat=apb.Heartbeat(seq=1, gpus=[gpu])))

    async def close(self) -> None:
        await self.outbox.put(None)
        if self.task is not None:
            self.task.cancel()
            with pytest.raises((asyncio.CancelledError, grpc.aio.AioRpcError)):
                await self.task
            self.task = None


@pytest.fixture
async def placement(runtime: Runtime) -> AsyncIterator[tuple[PlacementApp, grpc.aio.Channel]]:
    # The background reconciler is parked (one pass an hour); tests call reconcile_once themselves.
    # A short reconnect cap keeps the start-up grace (cap + LOST_S) just under the tests' first LOST_S + 1.
    config = PlacementConfig(
        lost_timeout_s=LOST_S, reconcile_interval_s=3600, drain_grace_s=30, agent_reconnect_max_s=0.5
    )
    app = PlacementApp(runtime.sessions, runtime.clock, config)
    running = await start_service(build_for(app), "127.0.0.1", 0, runtime.telemetry)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session, clock=runtime.clock).create("d1", SPEC, "test")
    try:
        yield app, channel
    finally:
        await channel.close()
        await stop_service(running, 1.0)
        # Let the agent streams' tasks finish unwinding before the test's loop closes: closing the loop
        # while they still run hung the loop's task cancellation about one run in four (a shutdown race
        # not yet root-caused; bounded here so it can never hang the suite).
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5.0)


async def settle(app: PlacementApp, until: object, timeout_s: float = 10.0) -> None:
    """Poll (with real short sleeps) until ``until()`` is true; the stream work is asynchronous."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await until():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def replicas(stub: placement_pb2_grpc.PlacementServiceStub) -> list[pb.Replica]:
    return list((await stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))).replicas)


def apply(replicas_wanted: int, stage: int = common_pb2.STAGE_SERVING) -> pb.ApplyDesiredRequest:
    pool = common_pb2.PoolKey(stage=stage, operator=common_pb2.OPERATOR_KIND_MODEL)
    plan = common_pb2.PoolPlan(pool=pool, replicas=replicas_wanted, batch_size=8, gpus_per_replica=1)
    return pb.ApplyDesiredRequest(deployment="d1", pools=[plan])


async def test_register_place_scale_in_and_lose_a_node(
    placement: tuple[PlacementApp, grpc.aio.Channel], runtime: Runtime
) -> None:
    app, channel = placement
    stub = placement_pb2_grpc.PlacementServiceStub(channel)
    agents = agent_pb2_grpc.AgentServiceStub(channel)
    a, b = ScriptedAgent("n1", 2, agents), ScriptedAgent("n2", 2, agents)
    ack = await a.connect()
    assert ack.node_name == "n1" and ack.lost_timeout_s == LOST_S
    await b.connect()
    nodes = (await stub.ListNodes(pb.ListNodesRequest())).nodes
    assert [(n.name, n.status) for n in nodes] == [("n1", pb.NODE_STATUS_READY), ("n2", pb.NODE_STATUS_READY)]

    # Identity: a second live agent claiming n1 is refused, naming the node; n1's session is untouched.
    intruder = ScriptedAgent("n1", 2, agents)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await intruder.connect()
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "'n1'" in (info.value.details() or "")
    await intruder.close()

    reply = await stub.ApplyDesired(apply(3))
    assert (reply.replicas_to_start, reply.replicas_to_drain, len(reply.infeasible)) == (3, 0, 0)

    async def all_ready() -> bool:
        got = await replicas(stub)
        return len(got) == 3 and all(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got)

    await settle(app, all_ready)
    # One replica per GPU (compute_fraction 1.0): 3 of the 4 GPUs, never the same GPU twice on a node.
    placed = {(r.node, tuple(r.gpu_indices)) for r in await replicas(stub)}
    assert len(placed) == 3
    assert sum(len(x) for x in a.running.values()) + sum(len(x) for x in b.running.values()) == 3

    # Over capacity: 4 GPUs hold at most 4; the rest is infeasible data with a reason, not an error.
    reply = await stub.ApplyDesired(apply(6))
    assert reply.replicas_to_start == 1
    assert [(i.requested, i.satisfiable) for i in reply.infeasible] == [(6, 4)]
    assert reply.infeasible[0].reason

    async def four_ready() -> bool:
        got = await replicas(stub)
        return len(got) == 4 and all(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got)

    await settle(app, four_ready)

    # Invalid request (a prefill pool in a colocated deployment): refused whole, nothing changes.
    before = sorted(r.id for r in await replicas(stub))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApplyDesired(apply(1, stage=common_pb2.STAGE_PREFILL))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "pools[0].pool.stage" in (info.value.details() or "")
    assert sorted(r.id for r in await replicas(stub)) == before

    # Two-phase scale-in to 2: two replicas drain first, and stop only once drained.
    reply = await stub.ApplyDesired(apply(2))
    assert reply.replicas_to_drain == 2

    async def two_draining() -> bool:
        got = await replicas(stub)
        return sum(r.observed_state == pb.REPLICA_OBSERVED_STATE_DRAINING for r in got) == 2

    await settle(app, two_draining)
    assert not any(c.WhichOneof("action") == "stop" for c in a.commands + b.commands)
    await app.reconciler.reconcile_once()

    async def two_left() -> bool:
        return len(await replicas(stub)) == 2

    await settle(app, two_left)
    stops = [c for c in a.commands + b.commands if c.WhichOneof("action") == "stop"]
    assert len(stops) == 2
    assert len(a.running) + len(b.running) == 2

    # Lose the node that holds a replica: its replicas are re-placed on the other node.
    victim, survivor = (a, b) if a.running else (b, a)
    moved = len(victim.running)
    await victim.close()
    assert isinstance(runtime.clock, VirtualClock)
    runtime.clock.advance(LOST_S + 1)
    await survivor.beat()
    await settle(app, lambda: _beat_seen(app, survivor.name))
    gpus = (await stub.ListGpus(pb.ListGpusRequest(node=survivor.name))).gpus
    assert gpus[0].telemetry.power_watts == 400.0 and not gpus[1].HasField("telemetry")
    await app.reconciler.reconcile_once()
    node = (await stub.GetNode(pb.GetNodeRequest(name=victim.name))).node
    assert node.status == pb.NODE_STATUS_LOST

    async def replaced() -> bool:
        got = await replicas(stub)
        live = [r for r in got if r.desired_state == pb.REPLICA_DESIRED_STATE_RUNNING]
        return len(live) == 2 and all(r.node == survivor.name for r in live) and len(survivor.running) == 2

    await settle(app, replaced)
    assert moved >= 1
    await survivor.close()


async def _beat_seen(app: PlacementApp, node: str) -> bool:
    session = app.registry.get(node)
    return session is not None and session.seq >= 1


async def beat_in(app: PlacementApp, agent: ScriptedAgent, now_s: float) -> None:
    """``agent`` beats and placement has the beat (stamped ``now_s``) before the caller reconciles:
    ``beat`` only queues it on the stream, and a pass that ran first judged a live node lost (seen on a
    loaded machine)."""
    await agent.beat()

    async def received() -> bool:
        session = app.registry.get(agent.name)
        return session is not None and session.last_beat_s >= now_s

    await settle(app, received)


async def test_malformed_stream_and_requests(placement: tuple[PlacementApp, grpc.aio.Channel]) -> None:
    _app, channel = placement
    stub = placement_pb2_grpc.PlacementServiceStub(channel)
    agents = agent_pb2_grpc.AgentServiceStub(channel)

    async def only_heartbeat() -> AsyncIterator[apb.ConnectRequest]:
        yield apb.ConnectRequest(heartbeat=apb.Heartbeat(seq=1))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in agents.Connect(only_heartbeat()):
            pass
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "register" in (
        info.value.details() or ""
    )

    for request, code, words in [
        (pb.ApplyDesiredRequest(deployment="d1"), grpc.StatusCode.INVALID_ARGUMENT, "pools"),
        (pb.ApplyDesiredRequest(pools=apply(1).pools), grpc.StatusCode.INVALID_ARGUMENT, "deployment"),
        (pb.ApplyDesiredRequest(deployment="nope", pools=apply(1).pools), grpc.StatusCode.NOT_FOUND, "nope"),
        (
            pb.ApplyDesiredRequest(deployment="d1", spec_version=7, pools=apply(1).pools),
            grpc.StatusCode.ABORTED,
            "spec version",
        ),
        (
            pb.ApplyDesiredRequest(deployment="d1", pools=[*apply(1).pools, *apply(2).pools]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "twice",
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ApplyDesired(request)
        assert info.value.code() is code, (request, info.value.details())
        assert words in (info.value.details() or ""), info.value.details()
    assert not (await stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))).replicas
    # No agents: everything is infeasible, with the reason, and nothing is placed.
    reply = await stub.ApplyDesired(apply(2))
    assert reply.replicas_to_start == 0 and reply.infeasible[0].satisfiable == 0
    assert "no node" in reply.infeasible[0].reason


async def test_drain_node_moves_replicas(placement: tuple[PlacementApp, grpc.aio.Channel]) -> None:
    app, channel = placement
    stub = placement_pb2_grpc.PlacementServiceStub(channel)
    agents = agent_pb2_grpc.AgentServiceStub(channel)
    a, b = ScriptedAgent("n1", 2, agents), ScriptedAgent("n2", 2, agents)
    await a.connect()
    await b.connect()
    await stub.ApplyDesired(apply(2))

    async def ready() -> bool:
        got = await replicas(stub)
        return len(got) == 2 and all(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got)

    await settle(app, ready)
    busy = a if a.running else b
    other = b if busy is a else a
    on_busy = len(busy.running)
    reply = await stub.DrainNode(pb.DrainNodeRequest(name=busy.name, actor="sre"))
    assert reply.replicas_to_move == on_busy and reply.node.status == pb.NODE_STATUS_DRAINING

    async def moved() -> bool:
        await app.reconciler.reconcile_once()
        got = await replicas(stub)
        return not busy.running and len(other.running) == 2 and len(got) == 2

    await settle(app, moved)

    async def emptied() -> bool:  # the pass after the last stop closes the drain
        await app.reconciler.reconcile_once()
        node = (await stub.GetNode(pb.GetNodeRequest(name=busy.name))).node
        return node.status == pb.NODE_STATUS_CORDONED

    await settle(app, emptied)
    await a.close()
    await b.close()


async def test_unacked_commands_are_resent_and_drains_end_by_grace(
    placement: tuple[PlacementApp, grpc.aio.Channel], runtime: Runtime
) -> None:
    app, channel = placement
    stub = placement_pb2_grpc.PlacementServiceStub(channel)
    agents = agent_pb2_grpc.AgentServiceStub(channel)
    # An agent reporting a replica placement never heard of is told to stop it.
    wedged = ScriptedAgent("n1", 1, agents, silent=True, claims=["stranger"])
    ack = await wedged.connect()
    assert list(ack.stop_replica_ids) == ["stranger"]
    await stub.ApplyDesired(apply(1))
    await settle(app, lambda: _has_commands(wedged, 1))
    first = wedged.commands[0]
    assert first.WhichOneof("action") == "start"
    # Not acknowledged within command_resend_s (5 s): the reconciler sends the same command again;
    # a level-triggered repeat, the agent dedupes it by (replica_id, generation).
    assert isinstance(runtime.clock, VirtualClock)
    await app.reconciler.reconcile_once()
    assert len(wedged.commands) == 1  # not yet due
    runtime.clock.advance(6)
    await wedged.beat()
    await app.reconciler.reconcile_once()
    await settle(app, lambda: _has_commands(wedged, 2))
    again = wedged.commands[1]
    assert (again.command_id, again.replica_id, again.generation) == (
        first.command_id,
        first.replica_id,
        first.generation,
    )
    await wedged.close()

    # A replica that drains but never reports drained is stopped once the drain grace (30 s) is over.
    slow = ScriptedAgent("n2", 1, agents, report_drained=False)
    await slow.connect()
    await app.set_status("n1", NodeStatus.CORDONED, None, "test")
    runtime.clock.advance(0.5)

    async def running_on_n2() -> bool:
        await app.reconciler.reconcile_once()
        got = [r for r in await replicas(stub) if r.node == "n2"]
        return len(got) == 1 and got[0].observed_state == pb.REPLICA_OBSERVED_STATE_READY

    await slow.beat()
    runtime.clock.advance(11)  # n1 stops beating (it is gone): lost after 10 s, its replica moves to n2
    await beat_in(app, slow, runtime.clock.now())
    await settle(app, running_on_n2)
    await stub.ApplyDesired(apply(0))

    async def draining() -> bool:
        got = [r for r in await replicas(stub) if r.node == "n2"]
        return bool(got) and got[0].observed_state == pb.REPLICA_OBSERVED_STATE_DRAINING

    await settle(app, draining)
    await app.reconciler.reconcile_once()
    assert not any(c.WhichOneof("action") == "stop" for c in slow.commands)
    runtime.clock.advance(31)
    await beat_in(app, slow, runtime.clock.now())
    await app.reconciler.reconcile_once()
    await settle(app, lambda: _has_stop(slow))
    await slow.close()


async def _has_commands(agent: ScriptedAgent, n: int) -> bool:
    return len(agent.commands) >= n


async def _has_stop(agent: ScriptedAgent) -> bool:
    return any(c.WhichOneof("action") == "stop" for c in agent.commands)


async def test_a_crash_looping_pool_is_replaced_with_back_off(
    placement: tuple[PlacementApp, grpc.aio.Channel], runtime: Runtime
) -> None:
    from opscale.services.placement.reconciler import FREE_FAILURES

    app, channel = placement
    stub = placement_pb2_grpc.PlacementServiceStub(channel)
    crashy = ScriptedAgent("n1", 2, agent_pb2_grpc.AgentServiceStub(channel), crash_on_start=True)
    await crashy.connect()
    await stub.ApplyDesired(apply(1))

    def starts() -> int:
        return sum(c.WhichOneof("action") == "start" for c in crashy.commands)

    async def failed_and_replaced(n: int) -> bool:
        await app.reconciler.reconcile_once()
        return starts() >= n

    # The first FREE_FAILURES failures are replaced at once...
    for n in range(2, FREE_FAILURES + 2):
        await settle(app, lambda n=n: failed_and_replaced(n))  # type: ignore[misc]

    # ...the next one is held back (2 s) instead of minting a replica per pass.
    async def failed_count() -> bool:
        await app.reconciler.reconcile_once()
        got = await replicas(stub)
        return all(r.desired_state == pb.REPLICA_DESIRED_STATE_STOPPED for r in got)

    await settle(app, failed_count)
    held = starts()
    for _ in range(3):
        await app.reconciler.reconcile_once()
    assert starts() == held and app.reconciler.held("d1")
    assert isinstance(runtime.clock, VirtualClock)
    runtime.clock.advance(2.1)
    await crashy.beat()
    await settle(app, lambda: failed_and_replaced(held + 1))
    await crashy.close()


async def test_a_stopping_placement_takes_no_new_agent(
    placement: tuple[PlacementApp, grpc.aio.Channel],
) -> None:
    """Once its streams are ended for shutdown, a placement still serving out its grace refuses a new
    registration (UNAVAILABLE, saying why) instead of acking a stream it is about to cut: the agent goes
    back through the placement address to whoever serves next, and no node row is written."""
    app, channel = placement
    app.registry.close_all()
    agent = ScriptedAgent("n1", 1, agent_pb2_grpc.AgentServiceStub(channel))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await agent.connect()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "stopping" in (refused.value.details() or "")
    assert app.registry.get("n1") is None
    assert not (await placement_pb2_grpc.PlacementServiceStub(channel).ListNodes(pb.ListNodesRequest())).nodes
    await agent.close()
