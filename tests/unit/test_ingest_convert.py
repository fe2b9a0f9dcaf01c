"""Ingest proto <-> domain: round trips, pools, shape errors naming the field, summaries on the wire."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.counters import HistogramBin
from opscale.errors import InvalidArgument
from opscale.services.ingest.convert import (
    batch_from_pb,
    sample_from_pb,
    sample_to_pb,
    summary_to_pb,
    window_query_from_pb,
)
from opscale.signals import (
    ALL_POOLS,
    Arrival,
    Distribution,
    GpuTelemetry,
    Latency,
    LatencyKind,
    OperatorBusy,
    PoolSummary,
    QueueState,
    Sample,
    Throughput,
    WindowSummary,
)
from opscale.spec import OperatorKind, PoolRef, Stage

u32 = st.integers(0, 2**32 - 1)
count = st.integers(1, 2**32 - 1)
num = st.floats(allow_nan=False, allow_infinity=False, width=64)
payloads = st.one_of(
    st.builds(Arrival, u32, u32, u32, count),
    st.builds(Latency, st.sampled_from(list(LatencyKind)), num, count),
    st.builds(QueueState, u32, u32, num),
    st.builds(Throughput, num, num, num),
    st.builds(OperatorBusy, num, num, u32),
    st.builds(GpuTelemetry, num, num),
)
# What a caller may send: text without NUL (the edge check refuses it, tested in test_edge_reproducers).
names = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20)
samples = st.builds(
    Sample,
    deployment=names,
    at_s=st.integers(1, 2**42).map(lambda ms: ms / 1000),
    payload=payloads,
    pool=st.none() | st.sampled_from(ALL_POOLS),
    instance=names,
)


@given(samples)
def test_sample_round_trip(s: Sample) -> None:
    assert sample_from_pb(sample_to_pb(s), 0) == s


def test_pool_defaults_and_errors() -> None:
    def pool_of(stage: int, operator: int) -> PoolRef | None:
        msg = pb.Sample(deployment="d", timestamp_ms=1, pool=cpb.PoolKey())
        msg.pool.stage, msg.pool.operator = stage, operator  # type: ignore[assignment]
        msg.arrival.SetInParent()
        return sample_from_pb(msg, 4).pool

    assert pool_of(cpb.STAGE_DECODE, cpb.OPERATOR_KIND_UNSPECIFIED) == PoolRef(
        stage=Stage.DECODE, operator=OperatorKind.MODEL
    )
    assert pool_of(cpb.STAGE_UNSPECIFIED, cpb.OPERATOR_KIND_UNSPECIFIED) is None
    for stage, operator, message in [
        (cpb.STAGE_UNSPECIFIED, cpb.OPERATOR_KIND_FFN, "samples[4].pool.stage is required"),
        (42, cpb.OPERATOR_KIND_FFN, "samples[4].pool.stage: 42 is not one of STAGE_PREFILL"),
        (cpb.STAGE_DECODE, 99, "samples[4].pool.operator: 99 is not one of"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            pool_of(stage, operator)
        assert message in info.value.message


def test_shape_errors_name_the_sample() -> None:
    with pytest.raises(
        InvalidArgument, match=r"samples\[1\]: a payload is required \(one of arrival, latency"
    ):
        batch_from_pb(pb.PushSamplesRequest(samples=[pb.Sample(arrival={}), pb.Sample()]))
    empty_latency = pb.Sample()
    empty_latency.latency.SetInParent()
    with pytest.raises(InvalidArgument, match=r"samples\[0\].latency: one of ttft_ms, tbt_ms, e2e_ms"):
        sample_from_pb(empty_latency, 0)


def test_wire_defaults() -> None:
    msg = pb.Sample(deployment="d", timestamp_ms=1_700_000_000_123)
    msg.latency.tbt_ms = 12.5
    s = sample_from_pb(msg, 0)
    assert s.at_s == 1_700_000_000.123 and s.payload == Latency(LatencyKind.TBT, 12.5, 1)  # count 0 means 1
    assert batch_from_pb(pb.PushSamplesRequest()).batch_id is None  # empty id: no deduplication


def test_window_query() -> None:
    q = window_query_from_pb(
        pb.GetWindowSummaryRequest(deployment="d", window_s=30, pools=[cpb.PoolKey(stage=cpb.STAGE_PREFILL)])
    )
    assert (q.deployment, q.window_s, q.pools) == (
        "d",
        30,
        (PoolRef(stage=Stage.PREFILL, operator=OperatorKind.MODEL),),
    )
    with pytest.raises(InvalidArgument, match=r"pools\[0\].stage is required"):
        window_query_from_pb(pb.GetWindowSummaryRequest(deployment="d", window_s=30, pools=[cpb.PoolKey()]))


def test_summary_on_the_wire() -> None:
    empty = Distribution(0, None, None, None, None, ())
    tokens = Distribution(
        3, 700.0, 650.0, 900.0, 990.0, (HistogramBin(512.0, 1024.0, 3), HistogramBin(1024.0, math.inf, 0))
    )
    pool = PoolSummary(
        pool=PoolRef(stage=Stage.DECODE, operator=OperatorKind.ATTENTION),
        queue_waiting_mean=2.0,
        queue_running_mean=None,
        kv_cache_usage_fraction=0.5,
        busy_fraction=None,
        batch_size_mean=None,
        decode_tokens_per_s=10.0,
        prefill_tokens_per_s=0.0,
        staleness_s={"queue": 0.5, "busy": None, "throughput": 1.0},
    )
    summary = WindowSummary(
        deployment="d",
        window_s=10.0,
        start_s=90.0,
        end_s=100.0,
        arrivals=3,
        arrivals_per_s=0.3,
        input_tokens=tokens,
        output_tokens=empty,
        cached_input_fraction=None,
        ttft_ms=Distribution(3, 120.0, 100.0, 150.0, 160.0, ()),
        tbt_ms=empty,
        e2e_ms=empty,
        decode_tokens_per_s=10.0,
        prefill_tokens_per_s=0.0,
        gpu_utilization_fraction=None,
        gpu_power_watts=None,
        pools=(pool,),
        staleness_s={"arrivals": 0.2, "tbt": None},
    )
    msg = summary_to_pb(summary)
    assert (msg.end_timestamp_ms, msg.arrivals, msg.arrivals_per_s) == (100_000, 3, 0.3)
    assert (msg.ttft_ms_p50, msg.ttft_ms_p90, msg.ttft_ms_p99, msg.ttft_samples) == (100.0, 150.0, 160.0, 3)
    assert msg.tbt_ms_p99 == 0.0 and msg.tbt_samples == 0  # absent: 0 on the wire, the count says why
    assert [(b.lower_tokens, b.upper_tokens, b.count) for b in msg.input_tokens_bins] == [
        (512.0, 1024.0, 3),
        (1024.0, math.inf, 0),
    ]
    assert [(s.signal, s.staleness_s, s.never_seen) for s in msg.staleness] == [
        ("arrivals", 0.2, False),
        ("tbt", 0.0, True),
    ]
    (p,) = msg.pools
    assert (p.pool.stage, p.pool.operator, p.queue_waiting_mean, p.kv_cache_usage_fraction) == (
        cpb.STAGE_DECODE,
        cpb.OPERATOR_KIND_ATTENTION,
        2.0,
        0.5,
    )
    assert [s.never_seen for s in p.staleness] == [False, True, False]
