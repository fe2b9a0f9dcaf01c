"""opscale.signals: validation names the field, aggregation keeps what a window read uses, and the
summary's numbers are the ones derived in the comments."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.counters import HistogramWrite, InMemoryCounterStore, Kind, WriteBatch
from opscale.errors import InvalidArgument
from opscale.signals import (
    Arrival,
    GpuTelemetry,
    Latency,
    LatencyKind,
    Limits,
    OperatorBusy,
    QueueState,
    Sample,
    Throughput,
    check_window,
    deployment_key,
    read_window_summary,
    samples_to_writes,
    store_settings,
    validate_samples,
)
from opscale.signals import series as S
from opscale.signals.summary import recent_window
from opscale.spec import OperatorKind, PoolRef, Stage

NOW = 1_700_000_000.0
DECODE = PoolRef(stage=Stage.DECODE, operator=OperatorKind.MODEL)
PREFILL_ATTN = PoolRef(stage=Stage.PREFILL, operator=OperatorKind.ATTENTION)
SETTINGS = store_settings()


def sample(
    payload: object, *, at_s: float = NOW - 0.5, pool: PoolRef | None = None, name: str = "llama"
) -> Sample:
    return Sample(name, at_s, payload, pool)  # type: ignore[arg-type]


def refused(samples: list[Sample], now_s: float = NOW) -> str:
    with pytest.raises(InvalidArgument) as info:
        validate_samples(samples, now_s=now_s, store=SETTINGS)
    return info.value.message


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "pool", "field"),
    [
        (Latency(LatencyKind.TTFT, math.nan), None, "samples[1].latency.ttft_ms: must be finite, got nan"),
        (Latency(LatencyKind.TBT, math.inf), None, "samples[1].latency.tbt_ms: must be finite"),
        (Latency(LatencyKind.E2E, -1.0), None, "samples[1].latency.e2e_ms: must be in [0, 3.6e+06]"),
        (Latency(LatencyKind.TTFT, 5.0, 0), None, "samples[1].latency.count: must be an integer in [1,"),
        (Arrival(-1, 10), None, "samples[1].arrival.input_tokens: must be an integer in [0,"),
        (Arrival(10, 10, 11), None, "samples[1].arrival.cached_input_tokens: must be an integer in [0, 10]"),
        (QueueState(1, -2, 0.5), DECODE, "samples[1].queue.waiting_requests"),
        (QueueState(1, 2, 1.5), DECODE, "samples[1].queue.kv_cache_usage_fraction: must be in [0, 1]"),
        (QueueState(1, 2, 0.5), None, "samples[1].pool: is required for a queue sample"),
        (Throughput(1.0, 1.0, 0.0), DECODE, "samples[1].throughput.interval_s: must be in (0, 60]"),
        (Throughput(-1.0, 1.0, 1.0), DECODE, "samples[1].throughput.decode_tokens_per_s"),
        (OperatorBusy(2.0, 1.0, 8), DECODE, "samples[1].busy.busy_s: must be in [0, 1]"),
        (OperatorBusy(0.5, 1.0, 8), None, "samples[1].pool: is required for a busy sample"),
        (GpuTelemetry(1.2, 300.0), None, "samples[1].gpu.utilization_fraction"),
        (GpuTelemetry(0.5, math.nan), None, "samples[1].gpu.power_watts: must be finite"),
        (Arrival(True, 1), None, "samples[1].arrival.input_tokens"),
    ],
)
def test_a_bad_value_is_refused_naming_sample_index_and_field(
    payload: object, pool: PoolRef | None, field: str
) -> None:
    good = sample(Latency(LatencyKind.TTFT, 10.0))
    assert field in refused([good, sample(payload, pool=pool)])


def test_timestamps_must_be_present_recent_and_not_far_ahead() -> None:
    assert "samples[0].timestamp_ms: is required" in refused([sample(Arrival(1, 1), at_s=0.0)])
    # max_future_s is 60: 61 s ahead is a broken clock.
    assert "61.000 s ahead" in refused([sample(Arrival(1, 1), at_s=NOW + 61)])
    validate_samples([sample(Arrival(1, 1), at_s=NOW + 59)], now_s=NOW, store=SETTINGS)
    # Retention is 3600 s: a sample whose 1 s bucket ended 3600 s or more ago is past it.
    assert "older than the retained window (3600 s)" in refused([sample(Arrival(1, 1), at_s=NOW - 3601)])
    validate_samples([sample(Arrival(1, 1), at_s=NOW - 3600)], now_s=NOW, store=SETTINGS)
    # A throughput interval must start inside retention too.
    late = sample(Throughput(1.0, 1.0, 30.0), at_s=NOW - 3590, pool=DECODE)
    assert "the interval starts 3620.000 s in the past" in refused([late])


def test_deployment_names_and_batch_size() -> None:
    assert "samples[0].deployment: is required" in refused([sample(Arrival(1, 1), name="")])
    assert "is not a deployment name" in refused([sample(Arrival(1, 1), name="Bad Name")])
    with pytest.raises(InvalidArgument, match="at most 3 samples, got 4"):
        validate_samples([sample(Arrival(1, 1))] * 4, now_s=NOW, store=SETTINGS, limits=Limits(max_samples=3))


# --- writes ------------------------------------------------------------------------------------------

values = st.floats(min_value=0.0, max_value=200_000.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, st.integers(1, 5), st.integers(0, 2999)), min_size=1, max_size=60))
async def test_histogram_aggregation_keeps_count_bins_min_max_and_sum(
    obs: list[tuple[float, int, int]],
) -> None:
    """One write per observation vs. the aggregated writes: the window reads agree (sum to rounding)."""
    naive, folded = InMemoryCounterStore(SETTINGS), InMemoryCounterStore(SETTINGS)
    key = deployment_key("llama", S.TTFT_MS)
    at = [NOW - 3 + ms / 1000 for _, _, ms in obs]
    await naive.apply(
        WriteBatch(tuple(HistogramWrite(key, t, v, c) for (v, c, _), t in zip(obs, at, strict=True))),
        now_s=NOW,
    )
    samples = [sample(Latency(LatencyKind.TTFT, v, c), at_s=t) for (v, c, _), t in zip(obs, at, strict=True)]
    batch = samples_to_writes(samples, SETTINGS)
    assert len(batch.writes) <= len(obs)
    await folded.apply(batch, now_s=NOW)
    a = await naive.read(key, Kind.HISTOGRAM, now_s=NOW, window_s=10)
    b = await folded.read(key, Kind.HISTOGRAM, now_s=NOW, window_s=10)
    assert (a.count, a.bins, a.min_value, a.max_value, a.last_write_s) == (
        b.count,
        b.bins,
        b.min_value,
        b.max_value,
        b.last_write_s,
    )
    assert b.sum == pytest.approx(a.sum, rel=1e-9, abs=1e-6)
    assert a.quantiles((0.5, 0.9, 0.99)) == pytest.approx(b.quantiles((0.5, 0.9, 0.99)))


def test_many_samples_fold_into_few_writes() -> None:
    # 1,000 queue samples of one pool in one bucket: 4 counter writes (samples, waiting, running, kv).
    samples = [sample(QueueState(4, 2, 0.5), at_s=NOW - 1 + i / 1000, pool=DECODE) for i in range(1000)]
    assert len(samples_to_writes(samples, SETTINGS).writes) == 4


async def test_throughput_is_spread_over_the_buckets_its_interval_covers() -> None:
    store = InMemoryCounterStore(SETTINGS)
    # 100 tokens/s over the 2.5 s before NOW - 0.5, i.e. [NOW-3, NOW-0.5]:
    # buckets NOW-3, NOW-2 and NOW-1 get 100, 100 and 50 tokens.
    await store.apply(
        samples_to_writes([sample(Throughput(100.0, 0.0, 2.5), pool=DECODE)], SETTINGS), now_s=NOW
    )
    key = deployment_key("llama", S.DECODE_TOKENS)
    for start, expected in ((NOW - 3, 100.0), (NOW - 2, 100.0), (NOW - 1, 50.0)):
        r = await store.read(key, Kind.COUNTER, now_s=start + 1, window_s=1)
        assert r.sum == pytest.approx(expected), start
    # Staleness counts from the sample's own time, not from the earliest bucket.
    assert (await store.read(key, Kind.COUNTER, now_s=NOW, window_s=1)).staleness_s == pytest.approx(0.5)


# --- summary -----------------------------------------------------------------------------------------


async def test_window_summary_numbers() -> None:
    store = InMemoryCounterStore(SETTINGS)
    samples: list[Sample] = []
    for i in range(100):  # 100 arrivals over the 10 s window, at NOW-10 .. NOW-0.1
        at = NOW - 10 + i / 10
        samples.append(sample(Arrival(1000 + 10 * i, 200, 250), at_s=at))
        samples.append(sample(Latency(LatencyKind.TTFT, 300.0), at_s=at))
        samples.append(sample(QueueState(8, 2 * (i % 2), 0.25), at_s=at, pool=DECODE))
    samples += [
        sample(Throughput(500.0, 0.0, 10.0), pool=DECODE),
        sample(OperatorBusy(0.6, 1.0, 16), at_s=NOW - 2, pool=PREFILL_ATTN),
        sample(OperatorBusy(0.2, 1.0, 8), at_s=NOW - 1.5, pool=PREFILL_ATTN),
        sample(GpuTelemetry(0.5, 400.0), at_s=NOW - 1),
        sample(GpuTelemetry(0.7, 600.0), at_s=NOW - 1),
    ]
    validate_samples(samples, now_s=NOW, store=SETTINGS, limits=Limits(max_samples=1000))
    await store.apply(samples_to_writes(samples, SETTINGS), now_s=NOW)
    s = await read_window_summary(store, "llama", now_s=NOW, window_s=10, pools=[DECODE, PREFILL_ATTN])

    assert s.arrivals == 100 and s.arrivals_per_s == pytest.approx(10.0)  # 100 in 10 s
    assert (s.recent_arrivals, s.recent_s) == (50, 5.0)  # the last 5 closed buckets: i >= 50
    assert s.input_tokens.mean == pytest.approx(1495.0)  # mean of 1000 + 10 i, i < 100
    assert s.input_tokens.p99 == pytest.approx(1990.0, rel=0.09)  # within one ~9% bin of 1990
    assert s.output_tokens.mean == 200 and s.output_tokens.p50 == 200  # one value: exact
    assert s.cached_input_fraction == pytest.approx(250 / 1495)
    assert (s.ttft_ms.count, s.ttft_ms.p50, s.ttft_ms.p99) == (100, 300.0, 300.0)  # min = max = 300
    assert s.tbt_ms.count == 0 and s.tbt_ms.p99 is None
    # 500 tokens/s for the 10 s before NOW - 0.5: 4,750 tokens in the window's closed buckets / 10 s.
    assert s.decode_tokens_per_s == pytest.approx(475.0)
    assert s.gpu_utilization_fraction == pytest.approx(0.6) and s.gpu_power_watts == pytest.approx(500.0)
    decode, prefill = s.pool(DECODE), s.pool(PREFILL_ATTN)
    assert decode is not None and prefill is not None
    assert decode.queue_running_mean == 8 and decode.queue_waiting_mean == pytest.approx(1.0)  # 0,2,0,2..
    assert decode.kv_cache_usage_fraction == pytest.approx(0.25)
    assert decode.busy_fraction is None and decode.staleness_s["busy"] is None
    assert prefill.busy_fraction == pytest.approx(0.4)  # (0.6 + 0.2) s busy of 2 s reported
    assert prefill.batch_size_mean == pytest.approx(12.0)
    assert s.staleness_s["queue"] == pytest.approx(0.1)  # the newest queue sample is at NOW - 0.1
    assert s.staleness_s["tbt"] is None and s.staleness_s["busy"] == pytest.approx(1.5)


async def test_pools_none_discovers_the_pools_with_data() -> None:
    store = InMemoryCounterStore(SETTINGS)
    writes = samples_to_writes(
        [sample(OperatorBusy(0.5, 1.0, 4), at_s=NOW - 100, pool=PREFILL_ATTN)], SETTINGS
    )
    await store.apply(writes, now_s=NOW)
    s = await read_window_summary(store, "llama", now_s=NOW, window_s=10)
    # Outside the 10 s window, but still retained: the pool is reported, with no window data.
    assert [p.pool for p in s.pools] == [PREFILL_ATTN]
    assert s.pools[0].busy_fraction is None and s.pools[0].staleness_s["busy"] == pytest.approx(100.0)


def test_the_short_window_is_whole_buckets_shorter_than_the_window() -> None:
    assert recent_window(30.0, 1.0) == 5.0
    assert recent_window(30.0, 2.0) == 4.0  # whole buckets within RECENT_S
    assert recent_window(60.0, 10.0) == 10.0  # at least one bucket
    assert recent_window(5.0, 1.0) == 0.0 and recent_window(10.0, 10.0) == 0.0  # not shorter: none


async def test_a_window_no_longer_than_the_short_one_reads_no_short_one() -> None:
    store = InMemoryCounterStore(SETTINGS)
    await store.apply(samples_to_writes([sample(Arrival(10, 10))], SETTINGS), now_s=NOW)
    s = await read_window_summary(store, "llama", now_s=NOW, window_s=5, pools=[])
    assert s.arrivals == 1 and (s.recent_arrivals, s.recent_s) == (None, 0.0)


def test_window_must_be_whole_buckets_within_retention() -> None:
    assert check_window(30, 1.0, 3600.0) == 30.0
    for bad in (0, -5, 0.5, 1.5, 3601, math.nan, math.inf):
        with pytest.raises(InvalidArgument, match=r"window_s must be in \(0, 3600\]"):
            check_window(bad, 1.0, 3600.0)
