"""Hypothesis-generated requests never crash metrics-ingest or come back INTERNAL: every answer is OK
or a caller error naming what is wrong.

Hypothesis drives a blocking gRPC client from a worker thread while the service runs on the test's
event loop, so each example is a real request over the wire.
"""

from __future__ import annotations

import asyncio

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.api.ingest.v1 import ingest_pb2_grpc
from tests.component.conftest import StartIngest

T_MS = 1_700_000_000_000
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 0.5, 1.0, 59.9, 60.0, 3600.0, 1e18, -1.0]),
)
u32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**24, 2**24 + 1, 1_000_001]))
enum_number = st.integers(-3, 9)
timestamps = st.one_of(
    st.integers(T_MS - 4_000_000, T_MS + 120_000),
    st.integers(-(2**63), 2**63 - 1),
    st.just(0),
)


def _payload(kind: str, a: float, b: float, c: float, n: int, m: int) -> dict[str, object]:
    fields: dict[str, dict[str, object]] = {
        "arrival": {
            "arrival": pb.RequestArrival(
                input_tokens=n, output_tokens=m, cached_input_tokens=n // 2, count=m % 3
            )
        },
        "ttft": {"latency": pb.LatencyObservation(ttft_ms=a, count=n % 5)},
        "tbt": {"latency": pb.LatencyObservation(tbt_ms=a)},
        "e2e": {"latency": pb.LatencyObservation(e2e_ms=a)},
        "empty_latency": {"latency": pb.LatencyObservation()},
        "queue": {"queue": pb.QueueState(running_requests=n, waiting_requests=m, kv_cache_usage_fraction=a)},
        "throughput": {
            "throughput": pb.TokenThroughput(decode_tokens_per_s=a, prefill_tokens_per_s=b, interval_s=c)
        },
        "busy": {"busy": pb.OperatorBusy(busy_s=a, interval_s=c, batch_size=n)},
        "gpu": {"gpu": cpb.GpuTelemetry(utilization_fraction=a, power_watts=b)},
        "none": {},
    }
    return fields[kind]


@st.composite
def samples(draw: st.DrawFn) -> pb.Sample:
    kind = draw(
        st.sampled_from(
            ["arrival", "ttft", "tbt", "e2e", "empty_latency", "queue", "throughput", "busy", "gpu", "none"]
        )
    )
    fields = _payload(kind, draw(floats), draw(floats), draw(floats), draw(u32), draw(u32))
    msg = pb.Sample(
        deployment=draw(
            st.sampled_from(["llama", "llama", "llama", "ghost", "", "Bad Name", "x" * 300, "llama\x00"])
        ),
        instance=draw(st.text(max_size=300)),
        timestamp_ms=draw(timestamps),
        **fields,  # type: ignore[arg-type]
    )
    if draw(st.booleans()):
        msg.pool.stage = draw(enum_number)  # type: ignore[assignment]
        msg.pool.operator = draw(enum_number)  # type: ignore[assignment]
    return msg


requests = st.builds(
    pb.PushSamplesRequest,
    batch_id=st.one_of(st.just(""), st.text(max_size=210), st.uuids().map(str)),
    samples=st.lists(samples(), max_size=12),
)
window_requests = st.builds(
    pb.GetWindowSummaryRequest,
    deployment=st.sampled_from(["llama", "ghost", ""]),
    window_s=floats,
    pools=st.lists(st.builds(cpb.PoolKey, stage=enum_number, operator=enum_number), max_size=3),
)


async def test_fuzzed_requests_never_crash_the_service(start_ingest: StartIngest) -> None:
    stack = await start_ingest()
    await stack.create_deployment("llama")
    stack.clock.set(T_MS / 1000)
    seen: set[grpc.StatusCode] = set()

    def fuzz(address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)

            def code_of(call: object) -> grpc.StatusCode:
                try:
                    call()  # type: ignore[operator]
                except grpc.RpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
            @given(requests, window_requests)
            def check(push: pb.PushSamplesRequest, window: pb.GetWindowSummaryRequest) -> None:
                for code in (
                    code_of(lambda: stub.PushSamples(push, timeout=10)),
                    code_of(
                        lambda: stub.StreamSamples(
                            iter([pb.StreamSamplesRequest(batch_id=push.batch_id, samples=push.samples)]),
                            timeout=10,
                        )
                    ),
                    code_of(lambda: stub.GetWindowSummary(window, timeout=10)),
                ):
                    seen.add(code)
                    assert code in ALLOWED, code

            check()

    await asyncio.to_thread(fuzz, stack.address)
    assert grpc.StatusCode.OK in seen and grpc.StatusCode.INVALID_ARGUMENT in seen
