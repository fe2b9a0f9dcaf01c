"""Two placement replicas over one database, on both backend pairs (issue 14, item 6b): one leads by the
lease; the real agent, pointed at the follower, is sent to the leader; the follower serves a write whose
commands the leader delivers; the leader goes away and the follower takes over within the lease bound,
the agent follows, and no replica is stopped (same replica ids, same process ids)."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import grpc
import pytest

from opscale.agent.agent import Agent, AgentConfig, leader_of
from opscale.agent.backoff import Backoff
from opscale.agent.gpus import FakeGpus
from opscale.agent.templates import Template
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.common.v1 import common_pb2
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.repo import DeploymentRepo
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.services.placement.app import PlacementApp, PlacementConfig
from opscale.services.placement.leader import Leadership
from opscale.services.placement.wiring import build_for
from opscale.services.runtime import Runtime
from tests.builders import until
from tests.component.test_placement_stream import SPEC

SLEEPER = Template("worker", (sys.executable, "-c", "import time; time.sleep(120)"))
RENEW_S = 0.2
CONFIG = PlacementConfig(heartbeat_interval_s=0.1, lost_timeout_s=60, reconcile_interval_s=0.2)


class Replica:
    """One placement replica: its app and server, and its leadership loop (run by the test so that the
    address it advertises is the port it got)."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime, self.name = runtime, name
        self.app = PlacementApp(runtime.sessions, runtime.clock, CONFIG)
        self.running: RunningService | None = None
        self.leadership: Leadership | None = None
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self.running = await start_service(build_for(self.app), "127.0.0.1", 0, self.runtime.telemetry)
        address = f"127.0.0.1:{self.running.port}"
        lease = self.runtime.lease(self.name, "placement")
        self.leadership = Leadership(
            lease, self.runtime.sessions, self.runtime.clock, address=address, renew_s=RENEW_S
        )
        self.app.leadership = self.leadership
        self.task = asyncio.create_task(
            self.leadership.run(self.stopping, self.app.gained_leadership, self.app.lost_leadership)
        )
        return address

    @property
    def leading(self) -> bool:
        return self.leadership is not None and self.leadership.leading

    async def stop(self) -> None:
        if self.running is not None:
            await stop_service(self.running, 0.2)
            self.running = None
        self.stopping.set()
        if self.task is not None:
            await self.task
            self.task = None


def apply(replicas: int) -> pb.ApplyDesiredRequest:
    pool = common_pb2.PoolKey(stage=common_pb2.STAGE_SERVING, operator=common_pb2.OPERATOR_KIND_MODEL)
    plan = common_pb2.PoolPlan(pool=pool, replicas=replicas, batch_size=8, gpus_per_replica=1)
    return pb.ApplyDesiredRequest(deployment="d1", pools=[plan])


async def test_leadership_moves_and_no_replica_stops(runtime: Runtime, tmp_path: Path) -> None:
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session, clock=runtime.clock).create("d1", SPEC, "test")
    first, second = Replica(runtime, "p1"), Replica(runtime, "p2")
    first_address = await first.start()
    await until(lambda: first.leading, timeout_s=10.0, what="p1 leads")
    second_address = await second.start()
    assert second.leadership is not None
    await until(lambda: second.leadership.leader_address == first_address, timeout_s=10.0, what="p2 follows")
    assert not second.leading
    async with grpc.aio.insecure_channel(second_address) as raw:  # what the follower tells an agent
        call = agent_pb2_grpc.AgentServiceStub(raw).Connect(iter(()))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert f"connect to the leader at {first_address}" in (refused.value.details() or "")
    assert leader_of(refused.value) == first_address

    agent = Agent(
        AgentConfig(
            node="n1",
            placement_address=second_address,  # the follower: it sends the agent to the leader
            state_dir=tmp_path / "agent",
            templates={"worker": SLEEPER},
            labels={"zone": "z", "s1": "a"},
        ),
        FakeGpus("2xH100", "n1"),
        backoff=Backoff(base_s=0.05, max_s=0.2, rng=random.Random(1)),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(agent.run(stopping))
    channel = grpc.aio.insecure_channel(second_address)
    try:
        await until(lambda: agent.registrations == 1, timeout_s=15.0, what="the agent registers")
        assert agent.placement_address == first_address and first.app.registry.get("n1") is not None

        # The follower serves the write; the leader delivers its start commands on its next pass.
        stub = placement_pb2_grpc.PlacementServiceStub(channel)
        assert (await stub.ApplyDesired(apply(2))).replicas_to_start == 2

        async def ready() -> bool:
            got = (await stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))).replicas
            return len(got) == 2 and all(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got)

        await until(ready, timeout_s=15.0, what="2 replicas READY")
        ids = {r.id for r in (await stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))).replicas}
        pids = {r: m.state.pid for r, m in agent.supervisor.replicas.items()}
        assert set(pids) == ids

        # The leader goes away: the follower takes the lease within a renewal or two, and the agent,
        # back at its configured address, registers there and keeps both processes.
        gone = time.monotonic()
        await first.stop()
        await until(lambda: second.leading, timeout_s=10.0, what="p2 leads")
        takeover_s = time.monotonic() - gone
        assert takeover_s < 5.0, takeover_s  # the lease bound here: p1 released it; p2 renews every 0.2 s
        await until(lambda: agent.registrations == 2, timeout_s=15.0, what="the agent registers again")
        assert agent.placement_address == second_address and second.app.registry.get("n1") is not None
        for _ in range(5):
            await second.app.reconciler.reconcile_once()
        await until(ready, timeout_s=15.0, what="2 replicas READY under p2")
        got = (await stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))).replicas
        assert {r.id for r in got} == ids and all(r.desired_state == 1 for r in got)
        assert {r: m.state.pid for r, m in agent.supervisor.replicas.items()} == pids
    finally:
        stopping.set()
        await task
        for managed in list(agent.supervisor.replicas.values()):
            await agent.supervisor.terminate(managed, 0.0)
        await channel.close()
        await first.stop()
        await second.stop()
