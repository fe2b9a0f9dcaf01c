"""Two readings -> samples: rates, histogram runs, arrivals, counter resets, re-baselining and roles.
Expected values derive from the fixture deltas listed in tests/fixtures/metrics/README.md."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from opscale.scrape import (
    EngineReading,
    HistogramValue,
    derive_samples,
    detect_engine,
    histogram_runs,
    parse_exposition,
    read_engine,
)
from opscale.signals import (
    Arrival,
    Latency,
    LatencyKind,
    QueueState,
    Sample,
    Throughput,
    store_settings,
    validate_samples,
)
from opscale.spec import OperatorKind, PoolRef, Stage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
T0 = 1_700_000_000.0


def reading(name: str, at_s: float) -> EngineReading:
    expo = parse_exposition((FIXTURES / name).read_text())
    engine = detect_engine(expo)
    assert engine is not None
    return read_engine(expo, engine, at_s)


def pool(stage: Stage) -> PoolRef:
    return PoolRef(stage=stage, operator=OperatorKind.MODEL)


def derive(prev: str | None, cur: str, *, stage: Stage = Stage.SERVING, gap: float = 2.0) -> list[Sample]:
    before = reading(prev, T0) if prev else None
    d = derive_samples(
        before, reading(cur, T0 + gap), deployment="llama", pool=pool(stage), instance="e:8000"
    )
    # Whatever the scraper derives passes the same validation as a push.
    validate_samples(d.samples, now_s=T0 + gap, store=store_settings())
    return list(d.samples)


def payloads(samples: list[Sample], kind: type) -> list[object]:
    return [s.payload for s in samples if isinstance(s.payload, kind)]


def latencies(samples: list[Sample], kind: LatencyKind) -> list[tuple[float, int]]:
    return [
        (s.payload.ms, s.payload.count)
        for s in samples
        if isinstance(s.payload, Latency) and s.payload.kind is kind
    ]


def test_vllm_rates_latencies_and_arrivals() -> None:
    samples = derive("vllm_v0.10_t0.txt", "vllm_v0.10_t1.txt")
    assert all(s.at_s == T0 + 2 and s.pool == pool(Stage.SERVING) and s.instance == "e:8000" for s in samples)
    assert payloads(samples, QueueState) == [QueueState(14, 5, 0.5)]
    # decode: +2,400 generation tokens / 2 s; prefill: (+6,000 prompt - 2,000 prefix hits) / 2 s.
    assert payloads(samples, Throughput) == [Throughput(1200.0, 2000.0, 2.0)]
    ttft = latencies(samples, LatencyKind.TTFT)
    # Bucket midpoints: (0.1, 0.25] -> 175 ms x2, (0.25, 0.5] -> 375 ms x2, (0.5, 0.75] -> 625 ms x1.
    assert ttft == [(175.0, 2), (375.0, 2), (625.0, 1)]
    tbt = latencies(samples, LatencyKind.TBT)
    assert tbt == [(pytest.approx(37.5), 2000), (62.5, 395)]
    e2e = latencies(samples, LatencyKind.E2E)
    assert e2e == [(12_500.0, 3), (17_500.0, 2)]
    # Prompt lengths 750 x2, 1500 x2, 3500 x1 paired by rank with outputs 350 x3, 750 x2; the cached
    # share is the interval's prefix-hit share, 2,000 / 6,000 = 1/3 (3500 / 3 = 1166.7 -> 1167).
    assert payloads(samples, Arrival) == [
        Arrival(750, 350, 250, 2),
        Arrival(1500, 350, 500, 1),
        Arrival(1500, 750, 500, 1),
        Arrival(3500, 750, 1167, 1),
    ]


def test_sglang_arrivals_come_from_the_token_counters() -> None:
    samples = derive("sglang_v0.4_t0.txt", "sglang_v0.4_t1.txt")
    assert payloads(samples, QueueState) == [QueueState(22, 4, 0.68)]
    # decode 1,600 / 2 s; prefill (4,800 - 1,200 cached) / 2 s.
    assert payloads(samples, Throughput) == [Throughput(800.0, 1800.0, 2.0)]
    # 4 requests, 4,800 prompt and 1,600 generation tokens: means 1,200 and 400; cached 1,200 / 4,800.
    assert payloads(samples, Arrival) == [Arrival(1200, 400, 300, 4)]
    ttft = latencies(samples, LatencyKind.TTFT)
    assert ttft == [(pytest.approx(300.0), 3), (500.0, 1)]


def test_counter_reset_takes_deltas_from_zero() -> None:
    before, after = reading("vllm_v0.10_t1.txt", T0), reading("vllm_v0.10_restarted.txt", T0 + 2)
    d = derive_samples(before, after, deployment="llama", pool=pool(Stage.SERVING), instance="e")
    assert d.counter_reset and not d.rebaselined
    # Since the restart: 800 generation tokens, 3,000 prompt tokens with no prefix hits, over 2 s.
    assert payloads(list(d.samples), Throughput) == [Throughput(400.0, 1500.0, 2.0)]
    # Two requests: prompts both in (1000, 2000] -> 1,500; outputs both in (200, 500] -> 350.
    assert payloads(list(d.samples), Arrival) == [Arrival(1500, 350, 0, 2)]
    sg = derive("sglang_v0.4_t1.txt", "sglang_v0.4_restarted.txt")
    assert payloads(sg, Throughput) == [Throughput(150.0, 500.0, 2.0)]
    assert payloads(sg, Arrival) == [Arrival(1000, 300, 0, 1)]


def test_first_reading_and_long_gaps_rebaseline() -> None:
    first = derive_samples(
        None, reading("vllm_v0.10_t0.txt", T0), deployment="d", pool=pool(Stage.DECODE), instance=""
    )
    assert first.rebaselined and [type(s.payload) for s in first.samples] == [QueueState]
    late = derive_samples(
        reading("vllm_v0.10_t0.txt", T0),
        reading("vllm_v0.10_t1.txt", T0 + 61),
        deployment="d",
        pool=pool(Stage.DECODE),
        instance="",
    )
    assert late.rebaselined and [type(s.payload) for s in late.samples] == [QueueState]


def test_roles_decide_what_an_instance_reports() -> None:
    prefill = derive("vllm_v0.10_t0.txt", "vllm_v0.10_t1.txt", stage=Stage.PREFILL)
    # Prefill engines: queue and computed prefill tokens only (the decode engine reports the requests).
    assert [type(s.payload) for s in prefill] == [QueueState, Throughput]
    assert payloads(prefill, Throughput) == [Throughput(0.0, 2000.0, 2.0)]
    decode = derive("vllm_v0.10_t0.txt", "vllm_v0.10_t1.txt", stage=Stage.DECODE)
    assert payloads(decode, Throughput) == [Throughput(1200.0, 0.0, 2.0)]
    assert len(payloads(decode, Arrival)) == 4


def test_overflow_bucket_gets_the_unexplained_sum() -> None:
    prev = HistogramValue(((1.0, 0.0), (2.0, 0.0), (math.inf, 0.0)), 0.0, 0.0)
    # +1 in (0, 1] (midpoint 0.5), +1 in (1, 2] (1.5), +2 above 2 with a sum delta of 12:
    # the overflow's two share 12 - 0.5 - 1.5 = 10, i.e. 5 each.
    cur = HistogramValue(((1.0, 1.0), (2.0, 2.0), (math.inf, 4.0)), 12.0, 4.0)
    assert histogram_runs(prev, cur, reset=False) == [(0.5, 1), (1.5, 1), (5.0, 2)]
    # With a sum that explains less than the lower bound, the overflow value is the bound itself.
    low = HistogramValue(((1.0, 1.0), (2.0, 2.0), (math.inf, 4.0)), 3.0, 4.0)
    assert histogram_runs(prev, low, reset=False)[-1] == (2.0, 2)
    # Changed buckets (an engine upgrade) give nothing rather than a wrong difference.
    other = HistogramValue(((5.0, 1.0), (math.inf, 1.0)), 1.0, 1.0)
    assert histogram_runs(prev, other, reset=False) == []
