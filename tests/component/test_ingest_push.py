"""Metrics-ingest over real gRPC, on SQLite + the in-process store and on PostgreSQL + Redis: pushes
read back as the expected window, refused batches change nothing, retries count once."""

from __future__ import annotations

import grpc
import pytest

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.counters import InMemoryCounterStore, RedisCounterStore
from opscale.signals import ALL_POOLS, TTFT_LAYOUT, read_window_summary
from tests.component.conftest import IngestStack, StartIngest

T = 1_700_000_000.0  # the VirtualClock's start: a whole second, so buckets start at T
DECODE = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_MODEL)
PREFILL_ATTN = cpb.PoolKey(stage=cpb.STAGE_PREFILL, operator=cpb.OPERATOR_KIND_ATTENTION)


def ms(at_s: float) -> int:
    return round(at_s * 1000)


def arrival(at_s: float, inp: int, out: int, cached: int = 0, name: str = "llama") -> pb.Sample:
    return pb.Sample(
        deployment=name,
        timestamp_ms=ms(at_s),
        arrival=pb.RequestArrival(input_tokens=inp, output_tokens=out, cached_input_tokens=cached),
    )


def ttft(at_s: float, value_ms: float, name: str = "llama") -> pb.Sample:
    return pb.Sample(deployment=name, timestamp_ms=ms(at_s), latency=pb.LatencyObservation(ttft_ms=value_ms))


def load_batch() -> list[pb.Sample]:
    """Ten seconds of load in [T, T + 10): see test_push_then_read_the_window for what it reads as."""
    s: list[pb.Sample] = []
    for i in range(50):  # one arrival and one TTFT every 0.2 s
        at = T + i * 0.2
        s.append(arrival(at, 1000 + 20 * i, 200, cached=100))
        s.append(ttft(at, 200.0 if i < 40 else 800.0))
    for k in range(10):
        s.append(
            pb.Sample(
                deployment="llama",
                pool=DECODE,
                instance=f"decode-{k % 2}",
                timestamp_ms=ms(T + k + 0.5),
                queue=pb.QueueState(running_requests=8, waiting_requests=k % 3, kv_cache_usage_fraction=0.25),
            )
        )
        # 1,000 decode tokens/s over the second before T + k + 1: exactly bucket T + k.
        s.append(
            pb.Sample(
                deployment="llama",
                pool=DECODE,
                timestamp_ms=ms(T + k + 1),
                throughput=pb.TokenThroughput(decode_tokens_per_s=1000, prefill_tokens_per_s=0, interval_s=1),
            )
        )
        s.append(
            pb.Sample(
                deployment="llama",
                pool=PREFILL_ATTN,
                timestamp_ms=ms(T + k + 0.5),
                busy=pb.OperatorBusy(busy_s=0.3, interval_s=1.0, batch_size=16),
            )
        )
    s.append(
        pb.Sample(
            deployment="llama",
            timestamp_ms=ms(T + 5),
            gpu=cpb.GpuTelemetry(utilization_fraction=0.4, power_watts=300),
        )
    )
    s.append(
        pb.Sample(
            deployment="llama",
            timestamp_ms=ms(T + 6),
            gpu=cpb.GpuTelemetry(utilization_fraction=0.8, power_watts=500),
        )
    )
    return s


async def stack_with_llama(start_ingest: StartIngest) -> IngestStack:
    stack = await start_ingest()
    await stack.create_deployment("llama")
    return stack


async def fails(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_push_then_read_the_window(start_ingest: StartIngest) -> None:
    stack = await stack_with_llama(start_ingest)
    batch = load_batch()
    reply = await stack.stub.PushSamples(pb.PushSamplesRequest(batch_id="load-1", samples=batch), timeout=10)
    assert (reply.accepted_samples, reply.duplicate) == (len(batch), False)

    stack.clock.set(T + 10)  # every bucket of [T, T + 10) has closed
    got = await stack.stub.GetWindowSummary(
        pb.GetWindowSummaryRequest(deployment="llama", window_s=10), timeout=10
    )
    w = got.summary
    assert (w.deployment, w.window_s, w.end_timestamp_ms) == ("llama", 10, ms(T + 10))
    assert (w.arrivals, w.arrivals_per_s) == (50, 5.0)  # 50 arrivals in 10 s
    assert w.input_tokens_mean == pytest.approx(1490.0)  # mean of 1000 + 20 i for i < 50
    assert (w.output_tokens_mean, w.output_tokens_p99) == (200.0, 200.0)  # one value: exact
    assert w.cached_input_fraction == pytest.approx(100 / 1490)
    # TTFT: 40 at 200 ms, 10 at 800 ms. p50 has rank 25 of 50: inside the bin holding 200, which the
    # quantile narrows to [min seen = 200, bin top]; p99 (rank 49.5) sits 9.5/10 into 800's bin,
    # narrowed to [bin bottom, max seen = 800].
    lo200, hi200 = TTFT_LAYOUT.bin_range(TTFT_LAYOUT.bin_of(200.0))
    lo800, _ = TTFT_LAYOUT.bin_range(TTFT_LAYOUT.bin_of(800.0))
    assert lo200 < 200 < hi200 and lo800 > 200
    assert w.ttft_samples == 50
    assert w.ttft_ms_p50 == pytest.approx(200 + (hi200 - 200) * 25 / 40)
    assert w.ttft_ms_p99 == pytest.approx(lo800 + (800 - lo800) * 9.5 / 10)
    assert w.tbt_samples == 0 and w.tbt_ms_p99 == 0.0
    assert w.decode_tokens_per_s == pytest.approx(1000.0)  # 10 x 1,000 tokens in 10 s
    assert (w.gpu_utilization_fraction, w.gpu_power_watts) == (pytest.approx(0.6), pytest.approx(400.0))
    pools = {(p.pool.stage, p.pool.operator): p for p in w.pools}
    assert set(pools) == {
        (cpb.STAGE_DECODE, cpb.OPERATOR_KIND_MODEL),
        (cpb.STAGE_PREFILL, cpb.OPERATOR_KIND_ATTENTION),
    }
    decode = pools[(cpb.STAGE_DECODE, cpb.OPERATOR_KIND_MODEL)]
    # Waiting 0,1,2,0,1,2,0,1,2,0 -> 9/10; summed over both instances' samples, not per instance.
    assert (decode.queue_waiting_mean, decode.queue_running_mean) == (pytest.approx(0.9), 8.0)
    assert decode.kv_cache_usage_fraction == 0.25 and decode.decode_tokens_per_s == pytest.approx(1000.0)
    prefill = pools[(cpb.STAGE_PREFILL, cpb.OPERATOR_KIND_ATTENTION)]
    assert (prefill.busy_fraction, prefill.batch_size_mean) == (pytest.approx(0.3), 16.0)
    stale = {s.signal: s for s in w.staleness}
    assert stale["arrivals"].staleness_s == pytest.approx(0.2)  # newest arrival at T + 9.8
    assert stale["tbt"].never_seen and not stale["ttft"].never_seen

    # The decision loop's path: the shared reader on the same store, one pool asked for.
    direct = await read_window_summary(
        stack.runtime.counters, "llama", now_s=T + 10, window_s=10, pools=[ALL_POOLS[0]]
    )
    assert direct.arrivals == 50 and direct.pools[0].staleness_s["queue"] is None  # prefill/embedding


async def store_state(stack: IngestStack) -> object:
    """Everything a refused batch could have touched: every key of the store, with its contents."""
    store = stack.runtime.counters
    summary = await read_window_summary(store, "llama", now_s=stack.clock.now(), window_s=20, pools=ALL_POOLS)
    if isinstance(store, InMemoryCounterStore):
        return len(store), summary
    assert isinstance(store, RedisCounterStore)
    client = store._client  # the test's own view of the keys under this test's prefix
    keys = sorted([k async for k in client.scan_iter(match=f"{store._prefix}*")])
    values = [await (client.hgetall(k) if k.split(b":")[-2:-1] != [b"d"] else client.get(k)) for k in keys]
    return keys, values, summary


async def test_a_refused_batch_changes_nothing(start_ingest: StartIngest) -> None:
    stack = await stack_with_llama(start_ingest)
    await stack.stub.PushSamples(pb.PushSamplesRequest(batch_id="base", samples=load_batch()), timeout=10)
    stack.clock.set(T + 10)
    before = await store_state(stack)

    good = [arrival(T + 9.5, 10, 10), ttft(T + 9.5, 50.0), arrival(T + 9.6, 10, 10)]
    nan = pb.Sample(
        deployment="llama", timestamp_ms=ms(T + 9), latency=pb.LatencyObservation(ttft_ms=float("nan"))
    )
    cases = [
        (
            [*good, nan],
            grpc.StatusCode.INVALID_ARGUMENT,
            "samples[3].latency.ttft_ms: must be finite, got nan",
        ),
        (
            [*good[:2], arrival(T + 9, 1, 1, name="ghost")],
            grpc.StatusCode.NOT_FOUND,
            "samples[2].deployment: deployment 'ghost' not found",
        ),
        (
            [*good, ttft(T + 10 + 61, 5.0)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "samples[3].timestamp_ms: is 61.000 s ahead",
        ),
        (
            [ttft(T - 4000, 5.0), *good],
            grpc.StatusCode.INVALID_ARGUMENT,
            "samples[0].timestamp_ms: it is 4010.000 s in the past",
        ),
        (
            [arrival(T + 9, 5, 5, cached=6)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "samples[0].arrival.cached_input_tokens",
        ),
        ([good[0]] * 2501, grpc.StatusCode.INVALID_ARGUMENT, "at most 2500 samples, got 2501"),
    ]
    for samples, code, message in cases:
        err = await fails(
            stack.stub.PushSamples(pb.PushSamplesRequest(batch_id="retry-me", samples=samples), timeout=10)
        )
        assert (err.code(), message in (err.details() or "")) == (code, True), err.details()
        assert await store_state(stack) == before
    # Not even the batch id was recorded: the corrected batch under the same id is applied.
    reply = await stack.stub.PushSamples(pb.PushSamplesRequest(batch_id="retry-me", samples=good), timeout=10)
    assert (reply.accepted_samples, reply.duplicate) == (3, False)
    assert await store_state(stack) != before


async def test_a_retried_batch_counts_once(start_ingest: StartIngest) -> None:
    stack = await stack_with_llama(start_ingest)
    request = pb.PushSamplesRequest(
        batch_id="b-1", samples=[arrival(T + 1, 100, 10), arrival(T + 2, 300, 30)]
    )
    first = await stack.stub.PushSamples(request, timeout=10)
    again = await stack.stub.PushSamples(request, timeout=10)
    assert (first.accepted_samples, first.duplicate) == (2, False)
    assert (again.accepted_samples, again.duplicate) == (0, True)

    async def batches() -> object:
        yield pb.StreamSamplesRequest(batch_id="s-1", samples=[arrival(T + 3, 500, 50)])
        yield pb.StreamSamplesRequest(batch_id="s-1", samples=[arrival(T + 3, 500, 50)])  # resent
        yield pb.StreamSamplesRequest(batch_id="b-1", samples=request.samples)  # an old unary batch
        yield pb.StreamSamplesRequest(samples=[arrival(T + 4, 700, 70)])  # no id: no dedupe

    reply = await stack.stub.StreamSamples(batches(), timeout=10)
    assert (reply.batches, reply.accepted_samples, reply.duplicate_batches) == (4, 2, 2)

    stack.clock.set(T + 10)
    w = (
        await stack.stub.GetWindowSummary(
            pb.GetWindowSummaryRequest(deployment="llama", window_s=10), timeout=10
        )
    ).summary
    assert w.arrivals == 4 and w.input_tokens_mean == pytest.approx((100 + 300 + 500 + 700) / 4)
    metric = stack.runtime.telemetry.registry.get_sample_value
    assert metric("opscale_ingest_duplicate_batches_total", {"source": "push"}) == 1
    assert metric("opscale_ingest_duplicate_batches_total", {"source": "stream"}) == 2
    assert metric("opscale_ingest_samples_accepted_total", {"source": "stream"}) == 2
    assert metric("opscale_ingest_push_duration_seconds_count", {"source": "push"}) == 2


async def test_a_refused_stream_batch_names_its_position(start_ingest: StartIngest) -> None:
    stack = await stack_with_llama(start_ingest)

    async def batches() -> object:
        yield pb.StreamSamplesRequest(batch_id="ok", samples=[arrival(T + 1, 10, 1)])
        yield pb.StreamSamplesRequest(
            batch_id="bad", samples=[arrival(T + 1, 10, 1), pb.Sample(deployment="llama")]
        )

    err = await fails(stack.stub.StreamSamples(batches(), timeout=10))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "stream batch 1 (batch_id 'bad'): samples[1]: a payload is required "
        "(one of arrival, latency, queue, throughput, busy, gpu)"
    )
    stack.clock.set(T + 10)
    w = (
        await stack.stub.GetWindowSummary(
            pb.GetWindowSummaryRequest(deployment="llama", window_s=10), timeout=10
        )
    ).summary
    assert w.arrivals == 1  # the batch before it stays applied
    rejected = {"source": "stream", "reason": "invalid"}
    assert (
        stack.runtime.telemetry.registry.get_sample_value("opscale_ingest_batches_rejected_total", rejected)
        == 1
    )


async def test_deployment_existence_is_cached_briefly(start_ingest: StartIngest) -> None:
    stack = await start_ingest()
    directory = stack.ingest.app.deployments
    push = pb.PushSamplesRequest(samples=[arrival(T, 10, 1, name="fresh")])
    err = await fails(stack.stub.PushSamples(push, timeout=10))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "samples[0].deployment: deployment 'fresh' not found",
    )
    await stack.create_deployment("fresh")
    # Refused within the last second: still NOT_FOUND until the 1 s negative entry expires (documented).
    assert (await fails(stack.stub.PushSamples(push, timeout=10))).code() is grpc.StatusCode.NOT_FOUND
    stack.clock.advance(1.01)
    assert (await stack.stub.PushSamples(push, timeout=10)).accepted_samples == 1
    lookups = directory.lookups
    for _ in range(5):  # within the 2 s positive entry: no more database queries
        await stack.stub.PushSamples(push, timeout=10)
    assert directory.lookups == lookups
    err = await fails(
        stack.stub.GetWindowSummary(pb.GetWindowSummaryRequest(deployment="ghost", window_s=10), timeout=10)
    )
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "deployment: deployment 'ghost' not found",
    )
    err = await fails(
        stack.stub.GetWindowSummary(pb.GetWindowSummaryRequest(deployment="fresh", window_s=2.5), timeout=10)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "whole number of 1 s buckets" in (
        err.details() or ""
    )
