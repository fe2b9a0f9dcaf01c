"""Every RPC of every service, fuzzed over real gRPC on both backend pairs (issue 13): hypothesis requests
built from each method's descriptor (edge values, NUL bytes, long strings, out-of-range integers, NaN,
unknown enums, seeds overlaid with noise) and raw frames that are no message at all, on every RPC kind.

Every answer must be OK or a caller error naming the problem: never INTERNAL or UNKNOWN, never a hang
(a unary call gets 30 s; a stream is cancelled by the client after 0.5 s and that counts as its own
outcome), and afterwards every service still answers SERVING and serves a valid request. Outcome counts
by method and status go to ``make fuzz``'s report (BENCHMARKS.md, "Fuzzing").

The normal suite runs a few examples per method; ``make fuzz`` scales them up (tests/fuzz_budget.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.ingest.v1 import ingest_pb2 as ipb
from opscale.api.keda import externalscaler_pb2 as kpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.worker.v1 import worker_pb2 as wpb
from opscale.clock import SystemClock
from opscale.db.records import GpuRecord
from opscale.db.repo import NodeRepo
from opscale.grpcutil.server import (
    HEALTH_INTERVAL_S,
    LIVENESS,
    RunningService,
    ServiceDef,
    start_service,
    stop_service,
)
from opscale.services.catalog import SERVICES
from opscale.services.runtime import Runtime
from opscale.worker.service import Worker, WorkerIdentity, register
from tests.builders import spec_pb
from tests.fuzz_budget import examples, report
from tests.fuzz_protos import raw_frames, requests

pytestmark = [
    pytest.mark.timeout(1800),
    # The services' own code (placement's jittered poll) uses ``random`` in another thread while
    # hypothesis draws; hypothesis sees that and warns, though no strategy uses it.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

UNARY_TIMEOUT_S = 30.0
STREAM_OPEN_S = 0.5
CALLER_ERRORS = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
    "OUT_OF_RANGE",
    "CANCELLED (by the client: stream left open)",
    "DEADLINE_EXCEEDED (what-if CPU budget)",
    "UNAVAILABLE (its store or a service it calls was busy: retry)",
}
# A transport failure: the service itself stopped answering (never allowed).
UNREACHABLE = ("failed to connect", "Connection refused", "Socket closed", "Broken pipe")
DECODE = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_MODEL)


class InstantClock(SystemClock):
    """The worker's simulated GPU time passes at once (a fuzzed batch may ask for hours of it)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def seeds() -> dict[str, list[Message]]:
    """Valid requests per message type, so noise overlaid on them reaches past the first check."""
    good_load = dpb.HypotheticalLoad(requests_per_s=5, input_tokens=500, output_tokens=100)
    sample = ipb.Sample(
        deployment="chat",
        timestamp_ms=1_700_000_000_000,
        pool=DECODE,
        queue=ipb.QueueState(running_requests=3, waiting_requests=1, kv_cache_usage_fraction=0.5),
    )
    register_msg = apb.Register(
        node_name="gpu-1",
        session_id="fuzz-session",
        gpus=[apb.GpuInfo(index=0, gpu_type="H100", memory_bytes=80 << 30)],
        templates=["worker"],
    )
    metadata = {"deployment": "chat", "pool": "decode/model"}
    items: list[Message] = [
        dpb.CreateDeploymentRequest(spec=spec_pb(name="fuzzed", model={"preset": "llama3-8b"})),
        dpb.UpdateDeploymentRequest(
            spec=spec_pb(name="chat", model={"preset": "llama3-8b"}), expected_version=1
        ),
        dpb.GetDeploymentRequest(name="chat"),
        dpb.FreezeDeploymentRequest(name="chat"),
        dpb.GetDecisionRequest(deployment="chat"),
        dpb.ListDecisionsRequest(deployment="chat"),
        dpb.ExplainDecisionRequest(deployment="chat"),
        dpb.WatchDecisionsRequest(deployments=["chat"], include_current=True),
        dpb.WhatIfRequest(deployment="chat", load=good_load, policy_names=["model"]),
        ppb.GetNodeRequest(name="gpu-0"),
        ppb.CordonNodeRequest(name="gpu-0"),
        ppb.DrainNodeRequest(name="gpu-0", grace_s=1),
        ppb.GetReplicasRequest(deployment="chat"),
        ppb.ApplyDesiredRequest(
            deployment="chat",
            spec_version=1,
            pools=[cpb.PoolPlan(pool=DECODE, replicas=1, gpus_per_replica=1)],
        ),
        ipb.PushSamplesRequest(batch_id="b", samples=[sample]),
        ipb.StreamSamplesRequest(batch_id="s", samples=[sample]),
        ipb.GetWindowSummaryRequest(deployment="chat", window_s=60),
        apb.ConnectRequest(register=register_msg),
        kpb.ScaledObjectRef(name="so", namespace="ns", scalerMetadata=metadata),
        kpb.GetMetricsRequest(scaledObjectRef=kpb.ScaledObjectRef(scalerMetadata=metadata)),
        wpb.ExecuteBatchRequest(request_id="r", batch_size=4, length_tokens=16),
    ]
    out: dict[str, list[Message]] = {}
    for item in items:
        out.setdefault(item.DESCRIPTOR.full_name, []).append(item)
    return out


@dataclass(frozen=True)
class Method:
    service: str  # our service name (where it listens)
    descriptor: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor.input_type)


def methods() -> list[Method]:
    out = []
    for service, module, name in (
        ("decision", dpb, "DecisionService"),
        ("placement", ppb, "PlacementService"),
        ("placement", apb, "AgentService"),
        ("ingest", ipb, "IngestService"),
        ("keda", kpb, "ExternalScaler"),
        ("worker", wpb, "WorkerService"),
    ):
        out += [Method(service, m) for m in module.DESCRIPTOR.services_by_name[name].methods]
    return out


def _outcome(exc: grpc.RpcError, cancelled: threading.Event) -> str:
    assert isinstance(exc, grpc.Call)
    code = exc.code()
    details = exc.details() or ""
    if code is grpc.StatusCode.CANCELLED and cancelled.is_set():
        return "CANCELLED (by the client: stream left open)"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and "CPU budget" in details:
        return "DEADLINE_EXCEEDED (what-if CPU budget)"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return "HANG (no answer within the deadline)"
    if code is grpc.StatusCode.UNAVAILABLE:
        if any(text in details for text in UNREACHABLE):
            return "UNREACHABLE (the service stopped answering)"
        # The service answered that a dependency is busy (SQLite locked past its busy timeout by the
        # background loops, the decision service slow for the KEDA scaler on a loaded machine): the
        # documented "retry" answer, not our bug; the health check at the end shows it still serving.
        return "UNAVAILABLE (its store or a service it calls was busy: retry)"
    return str(code.name)


def call(channel: grpc.Channel, method: Method, frames: Sequence[bytes]) -> tuple[str, str]:
    """Send ``frames`` (one for a unary request) as raw bytes; (outcome, details)."""
    d = method.descriptor
    ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731 - raw frames in and out
    cancelled = threading.Event()
    try:
        if not d.client_streaming and not d.server_streaming:
            channel.unary_unary(method.path, ident, ident)(frames[0], timeout=UNARY_TIMEOUT_S)
        elif d.client_streaming and not d.server_streaming:
            channel.stream_unary(method.path, ident, ident)(iter(frames), timeout=UNARY_TIMEOUT_S)
        else:
            if d.client_streaming:
                stream: Any = channel.stream_stream(method.path, ident, ident)(
                    iter(frames), timeout=UNARY_TIMEOUT_S
                )
            else:
                stream = channel.unary_stream(method.path, ident, ident)(frames[0], timeout=UNARY_TIMEOUT_S)

            def leave() -> None:
                cancelled.set()
                stream.cancel()

            timer = threading.Timer(STREAM_OPEN_S, leave)
            timer.start()
            try:
                for _ in stream:
                    pass
            finally:
                timer.cancel()
    except grpc.RpcError as exc:
        return _outcome(exc, cancelled), (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    return "OK", ""


def fuzz_method(
    channel: grpc.Channel, method: Method, seeded: dict[str, list[Message]], counts: Counter[str], n: int
) -> None:
    cls = method.request_class
    typed = requests(cls, seeded.get(cls.DESCRIPTOR.full_name, []))
    many = method.descriptor.client_streaming
    frames = st.one_of(
        st.lists(typed, min_size=1, max_size=3 if many else 1).map(
            lambda ms: [m.SerializeToString() for m in ms]
        ),
        st.lists(raw_frames, min_size=1, max_size=3 if many else 1),
    )

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frames)
    def check(sent: list[bytes]) -> None:
        outcome, details = call(channel, method, sent)
        counts[f"{method.path} {outcome}"] += 1
        assert outcome in CALLER_ERRORS, f"{method.path}: {outcome}: {details} for frames {sent!r:.600}"

    check()


async def start_stack(runtime: Runtime) -> tuple[dict[str, str], list[RunningService]]:
    """Every service on port 0, each told where the ones it calls listen (as ``opscale up`` does)."""
    runtime.settings = runtime.settings.model_copy(update={"whatif_cpu_budget_s": 0.3})
    started: list[RunningService] = []
    addresses: dict[str, str] = {}
    for name in ("placement", "ingest", "decision", "keda"):
        running = await start_service(SERVICES[name].build(runtime), "127.0.0.1", 0, runtime.telemetry)
        started.append(running)
        addresses[name] = f"127.0.0.1:{running.port}"
        field = f"{name}_address"
        if field in type(runtime.settings).model_fields:
            runtime.settings = runtime.settings.model_copy(update={field: addresses[name]})
    worker = Worker(WorkerIdentity("r1", "chat", "decode", "model", (0,)), lambda b, n: 1.0, InstantClock())
    definition = ServiceDef(
        name="worker",
        service_names=(wpb.DESCRIPTOR.services_by_name["WorkerService"].full_name,),
        register=lambda server: register(server, worker),
    )
    running = await start_service(definition, "127.0.0.1", 0, runtime.telemetry)
    started.append(running)
    addresses["worker"] = f"127.0.0.1:{running.port}"
    return addresses, started


async def seed_state(runtime: Runtime, decision: str) -> None:
    async with grpc.aio.insecure_channel(decision) as channel:
        from opscale.api.decision.v1 import decision_pb2_grpc

        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        await stub.CreateDeployment(
            dpb.CreateDeploymentRequest(spec=spec_pb(name="chat", model={"preset": "llama3-8b"})), timeout=10
        )
    async with runtime.sessions() as session, session.begin():
        gpus = [
            GpuRecord(index=i, uuid=f"gpu-0-{i}", gpu_type="H100", memory_bytes=80 << 30) for i in range(2)
        ]
        await NodeRepo(session, clock=runtime.clock).register(
            "gpu-0", gpus=gpus, labels={}, agent_session_id="s0"
        )


def health(addresses: dict[str, str], service: str = "") -> Iterator[tuple[str, int]]:
    for name, address in addresses.items():
        with grpc.insecure_channel(address) as channel:
            ask = health_pb2.HealthCheckRequest(service=service)
            yield name, health_pb2_grpc.HealthStub(channel).Check(ask, timeout=10).status


def still_serving(addresses: dict[str, str]) -> dict[str, int]:
    """Every service alive (no background task died) at once, and ready again within a few probes.

    Readiness is live: one database probe that took longer than ``CHECK_TIMEOUT_S`` on a loaded machine
    (SQLite busy under the fuzzing just done) reads NOT_SERVING until the next probe passes. A service
    the fuzzing broke stays NOT_SERVING, and a dead background task shows on liveness at once."""
    alive = dict(health(addresses, LIVENESS))
    assert alive == dict.fromkeys(addresses, health_pb2.HealthCheckResponse.SERVING), alive
    deadline = time.monotonic() + 5 * HEALTH_INTERVAL_S
    ready = dict(health(addresses))
    while set(ready.values()) != {health_pb2.HealthCheckResponse.SERVING} and time.monotonic() < deadline:
        time.sleep(HEALTH_INTERVAL_S / 4)
        ready = dict(health(addresses))
    return ready


async def test_every_rpc_answers_caller_errors_never_internal(
    runtime: Runtime, request: pytest.FixtureRequest
) -> None:
    addresses, started = await start_stack(runtime)
    counts: Counter[str] = Counter()
    try:
        await seed_state(runtime, addresses["decision"])
        seeded = seeds()

        def fuzz() -> None:
            channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}
            try:
                for method in methods():
                    fuzz_method(channels[method.service], method, seeded, counts, examples(10))
            finally:
                for channel in channels.values():
                    channel.close()

        await asyncio.to_thread(fuzz)
        serving = await asyncio.to_thread(still_serving, addresses)
        assert serving == dict.fromkeys(addresses, health_pb2.HealthCheckResponse.SERVING)
    finally:
        backend = request.node.callspec.params.get("runtime", "embedded")
        report(f"rpc ({backend})", counts)
        for running in reversed(started):
            await stop_service(running, 1.0)
    assert sum(counts.values()) >= len(methods()) * examples(10)
