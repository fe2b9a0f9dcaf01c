"""The real agent (in-process) against the real placement service: placement → agent → process, the
stream's reconnect with back-off and session resumption after placement restarts, and GPU telemetry
pushed to ingest. Processes are tiny Python sleepers from the agent's own templates."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from opscale.agent.agent import Agent, AgentConfig
from opscale.agent.backoff import Backoff
from opscale.agent.gpus import FakeGpus
from opscale.agent.templates import Template
from opscale.api.common.v1 import common_pb2
from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.repo import DeploymentRepo
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.services.placement.app import PlacementApp, PlacementConfig
from opscale.services.placement.wiring import build_for
from opscale.services.runtime import Runtime
from tests.builders import until

SLEEPER = Template("worker", (sys.executable, "-c", "import time; time.sleep(120)"))
SPEC = {
    "name": "d1",
    "model": {"preset": "llama3-8b"},
    "slo": {"ttft_ms": 1000, "tbt_ms": 100},
    "mode": "colocated",
}


class RecordingIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self) -> None:
        self.samples: list[ingest_pb2.Sample] = []

    async def PushSamples(
        self, request: ingest_pb2.PushSamplesRequest, context: Any
    ) -> ingest_pb2.PushSamplesResponse:
        self.samples.extend(request.samples)
        return ingest_pb2.PushSamplesResponse(accepted_samples=len(request.samples))


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[RecordingIngest, int]]:
    server = grpc.aio.server()
    recorder = RecordingIngest()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield recorder, port
    finally:
        await server.stop(0)


async def test_agent_runs_what_placement_places_and_resumes_after_placement_restarts(
    runtime: Runtime, tmp_path: Path, ingest: tuple[RecordingIngest, int]
) -> None:
    recorder, ingest_port = ingest
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session, clock=runtime.clock).create("d1", SPEC, "test")
    config = PlacementConfig(heartbeat_interval_s=0.1, lost_timeout_s=60, reconcile_interval_s=3600)

    async def serve(port: int) -> tuple[PlacementApp, RunningService]:
        app = PlacementApp(runtime.sessions, runtime.clock, config)
        return app, await start_service(build_for(app), "127.0.0.1", port, runtime.telemetry)

    app, running = await serve(0)
    port = running.port
    agent = Agent(
        AgentConfig(
            node="n1",
            placement_address=f"127.0.0.1:{port}",
            state_dir=tmp_path / "agent",
            templates={"worker": SLEEPER},
            labels={"zone": "z", "s1": "a"},
            ingest_address=f"127.0.0.1:{ingest_port}",
        ),
        FakeGpus("2xH100", "n1"),
        backoff=Backoff(base_s=0.05, max_s=0.2, rng=random.Random(1)),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(agent.run(stopping))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = placement_pb2_grpc.PlacementServiceStub(channel)

        async def registered() -> bool:
            return agent.registrations >= 1

        await until(registered, timeout_s=15.0)
        pool = common_pb2.PoolKey(stage=common_pb2.STAGE_SERVING, operator=common_pb2.OPERATOR_KIND_MODEL)
        plan = common_pb2.PoolPlan(pool=pool, replicas=2, batch_size=8, gpus_per_replica=1)
        reply = await stub.ApplyDesired(pb.ApplyDesiredRequest(deployment="d1", pools=[plan]))
        assert reply.replicas_to_start == 2

        async def ready() -> bool:
            got = (await stub.GetReplicas(pb.GetReplicasRequest(deployment="d1"))).replicas
            return len(got) == 2 and all(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got)

        await until(ready, timeout_s=15.0)
        assert sorted(i for m in agent.supervisor.replicas.values() for i in m.state.gpu_indices) == [0, 1]
        pids = {r: m.state.pid for r, m in agent.supervisor.replicas.items()}

        # GPU telemetry reaches ingest, attributed to the replica and its deployment's pool.
        async def pushed() -> bool:
            return {s.instance for s in recorder.samples} == set(pids)

        await until(pushed, timeout_s=15.0)
        sample = recorder.samples[-1]
        assert sample.deployment == "d1" and sample.pool == pool and sample.gpu.power_watts > 0

        # Placement restarts: the agent reconnects with back-off under the same session and keeps its
        # processes; the new placement process learns them from the registration (no new replicas).
        await channel.close()
        await stop_service(running, 0.5)
        app, running = await serve(port)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = placement_pb2_grpc.PlacementServiceStub(channel)

        async def resumed() -> bool:
            live = app.registry.get("n1")
            return agent.registrations >= 2 and live is not None and live.session_id == agent.session_id

        await until(resumed, timeout_s=15.0)
        await until(ready, timeout_s=15.0)
        assert {r: m.state.pid for r, m in agent.supervisor.replicas.items()} == pids
    finally:
        stopping.set()
        await task
        for managed in list(agent.supervisor.replicas.values()):
            await agent.supervisor.terminate(managed, 0.0)
        await channel.close()
        await stop_service(running, 0.5)
