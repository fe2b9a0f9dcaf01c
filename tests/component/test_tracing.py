"""One decision is one trace: decision tick → ApplyDesired (client and server) → the agent's command.

The decision service, the placement service and a real agent run in-process, each with its own
Telemetry (its own ``service.name``) exporting into one in-memory exporter, as three processes would
export to one collector. The deployment uses the ``static`` policy with one replica, so the first
decision asks placement for it and placement sends the agent a start command. The agent's process is
a tiny Python sleeper from its own template (no real worker).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opscale.agent.agent import Agent, AgentConfig
from opscale.agent.backoff import Backoff
from opscale.agent.gpus import FakeGpus
from opscale.agent.templates import Template
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.grpcutil.server import start_service, stop_service
from opscale.services.decision.loop import LoopOptions
from opscale.services.decision.wiring import build_service
from opscale.services.placement.app import PlacementApp, PlacementConfig
from opscale.services.placement.wiring import build_for
from opscale.services.runtime import Runtime
from opscale.telemetry import build_telemetry
from tests.builders import static_spec_pb
from tests.component.decision_kit import eventually

SLEEPER = Template("worker", (sys.executable, "-c", "import time; time.sleep(120)"))
APPLY_DESIRED = "opscale.api.placement.v1.PlacementService/ApplyDesired"


def _static_spec(name: str) -> pb.DeploymentSpec:
    return static_spec_pb(name, {"serving/model": 1}, interval_s=0.0, mode="colocated")


def _service(span: ReadableSpan) -> object:
    return span.resource.attributes.get("service.name")


def _only(spans: Sequence[ReadableSpan], name: str, kind: trace.SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, f"{name} ({kind.name}): {len(found)} spans"
    return found[0]


def _parent_is(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None and parent.context is not None
    return bool(child.parent.span_id == parent.context.span_id)


async def test_one_decision_is_one_trace_across_decision_placement_and_agent(
    runtime: Runtime, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    # Three processes' worth of telemetry, one collector.
    decision_t, placement_t, agent_t = (
        build_telemetry(name, span_exporter=spans)
        for name in ("opscale-decision", "opscale-placement", "opscale-agent")
    )
    placement = PlacementApp(
        runtime.sessions,
        runtime.clock,
        PlacementConfig(heartbeat_interval_s=0.1, lost_timeout_s=60, reconcile_interval_s=3600),
        tracer=placement_t.tracer("opscale.placement"),
    )
    placement_running = await start_service(build_for(placement), "127.0.0.1", 0, placement_t)
    placement_address = f"127.0.0.1:{placement_running.port}"
    agent = Agent(
        AgentConfig(
            node="n1",
            placement_address=placement_address,
            state_dir=tmp_path / "agent",
            templates={"worker": SLEEPER},
            labels={"zone": "z", "s1": "a"},
        ),
        FakeGpus("2xH100", "n1"),
        backoff=Backoff(base_s=0.05, max_s=0.2, rng=random.Random(1)),
        telemetry=agent_t,
    )
    stopping = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(stopping))

    # The decision service reaches placement the production way: its wiring builds the client from
    # the settings, with the decision process's telemetry.
    decision_rt = dataclasses.replace(
        runtime,
        telemetry=decision_t,
        settings=runtime.settings.model_copy(update={"placement_address": placement_address}),
    )

    async def pace(_seconds: float) -> None:
        await asyncio.sleep(0.01)

    decision = build_service(
        decision_rt, options=LoopOptions(replica_id="r1", wake_s=0.01, window_wanted_s=5.0), pace=pace
    )
    decision_running = None
    channel = None
    try:
        await eventually(lambda: agent.registrations >= 1, timeout_s=15)
        decision_running = await start_service(decision.definition, "127.0.0.1", 0, decision_t)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{decision_running.port}")
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=_static_spec("traced")), timeout=5)

        def commanded() -> bool:
            return any(s.name == "agent.command" for s in spans.get_finished_spans())

        await eventually(commanded, timeout_s=15)
        placed = [record for record, _ in await placement.get_replicas("traced")]
    finally:
        if channel is not None:
            await channel.close(None)
        if decision_running is not None:
            await stop_service(decision_running, 1.0)
        stopping.set()
        await agent_task
        for managed in list(agent.supervisor.replicas.values()):
            await agent.supervisor.terminate(managed, 0.0)
        await stop_service(placement_running, 0.5)
        for telemetry in (decision_t, placement_t, agent_t):
            telemetry.shutdown()

    finished = spans.get_finished_spans()
    command = _only(finished, "agent.command", trace.SpanKind.CONSUMER)
    assert command.context is not None
    in_trace = [
        s for s in finished if s.context is not None and s.context.trace_id == command.context.trace_id
    ]
    client = _only(in_trace, APPLY_DESIRED, trace.SpanKind.CLIENT)
    server = _only(in_trace, APPLY_DESIRED, trace.SpanKind.SERVER)
    tick = _only(in_trace, "decision.tick", trace.SpanKind.INTERNAL)

    # The chain: the tick hands off (CLIENT) → placement handles it (SERVER) and queues the start
    # command inside that span → the agent acts on the command under it.
    assert tick.parent is None
    assert _parent_is(client, tick)
    assert _parent_is(server, client)
    assert _parent_is(command, server)
    # Each hop was recorded by the process that made it.
    assert (_service(tick), _service(client)) == ("opscale-decision", "opscale-decision")
    assert _service(server) == "opscale-placement"
    assert _service(command) == "opscale-agent"
    assert command.attributes is not None
    assert command.attributes["kind"] == "start"
    assert command.attributes["ack_status"] == "ACK_STATUS_ACCEPTED"
    assert len(placed) == 1
    assert (command.attributes["replica_id"], command.attributes["generation"]) == (
        placed[0].id,
        placed[0].generation,
    )
