"""Two readings -> samples, against the simulated engines' truth (tolerances in
tests/fixtures/metrics/check.py): arrivals, lengths, token rates, latencies; restarts by process start
time, ``_created`` and counter drops; gaps; roles."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from opscale.scrape import (
    Engine,
    EngineReading,
    HistogramValue,
    derive_samples,
    parse_exposition,
    read_models,
    restarted,
)
from opscale.signals import Arrival, Latency, QueueState, Sample, Throughput, store_settings, validate_samples
from opscale.spec import OperatorKind, PoolRef, Stage
from tests.fixtures.metrics.check import Observed, compare, weighted_quantile
from tests.fixtures.metrics.enginesim import T0, EngineSim, Workload

BUSY = Workload(rate_per_s=6.0, slots=40, kv_capacity_tokens=125_000)


def pool(stage: Stage = Stage.SERVING) -> PoolRef:
    return PoolRef(stage=stage, operator=OperatorKind.MODEL)


def read(sim: EngineSim, t: float, model: str = "llama") -> EngineReading:
    expo = parse_exposition(sim.exposition_at(t))
    return read_models(expo, Engine(sim.kind), t)[model]


def derive(
    prev: EngineReading | None, cur: EngineReading, stage: Stage = Stage.SERVING, **kw: float
) -> list[Sample]:
    d = derive_samples(prev, cur, deployment="llama", pool=pool(stage), instance="e:8000", **kw)
    # Whatever the scraper derives passes the same validation as a push.
    validate_samples(d.samples, now_s=cur.at_s, store=store_settings())
    return list(d.samples)


def observed(samples: list[Sample]) -> Observed:
    arrivals = [s.payload for s in samples if isinstance(s.payload, Arrival)]
    n = sum(a.count for a in arrivals)
    throughput = [s.payload for s in samples if isinstance(s.payload, Throughput)]
    latency = {}
    for kind in ("ttft", "tbt", "e2e"):
        runs = [
            (p.ms, p.count)
            for s in samples
            if isinstance(p := s.payload, Latency) and p.kind.value == f"{kind}_ms"
        ]
        count = sum(c for _, c in runs)
        mean = sum(v * c for v, c in runs) / count if count else None
        latency[kind] = (count, mean, weighted_quantile(runs, 0.5), weighted_quantile(runs, 0.9))
    return Observed(
        arrivals=n,
        prompt_mean=sum(a.input_tokens * a.count for a in arrivals) / n if n else None,
        output_mean=sum(a.output_tokens * a.count for a in arrivals) / n if n else None,
        decode_tokens=sum(t.decode_tokens_per_s * t.interval_s for t in throughput),
        prefill_tokens=sum(t.prefill_tokens_per_s * t.interval_s for t in throughput),
        latency=latency,
    )


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
@pytest.mark.parametrize("dp", [1, 2])
def test_signals_match_the_truth(kind: str, dp: int) -> None:
    sim = EngineSim(kind, dp=dp, workload=BUSY, horizon_s=90, seed=11)
    t0, t1 = T0 + 20, T0 + 80
    samples = derive(read(sim, t0), read(sim, t1))
    assert compare(kind, observed(samples), sim.truth(t0, t1)) == []
    (queue,) = [s.payload for s in samples if isinstance(s.payload, QueueState)]
    truth = sim.truth(t0, t1)
    assert (queue.running_requests, queue.waiting_requests) == (truth.running, truth.waiting)
    assert queue.kv_cache_usage_fraction == pytest.approx(max(truth.kv_by_engine))


def test_arrivals_come_from_the_received_counter_or_from_conservation() -> None:
    for kind, source in (("vllm", "conservation"), ("sglang", "counter")):
        sim = EngineSim(kind, workload=BUSY, horizon_s=40, seed=5)
        d = derive_samples(read(sim, T0 + 10), read(sim, T0 + 30), deployment="d", pool=pool(), instance="e")
        assert d.arrivals_from == source


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_a_restart_counts_from_zero(kind: str) -> None:
    # The engine restarts at T0 + 40, right after a scrape; scraped every second, as the ingest does.
    # What the new process counts is all there is. (Over the 2 minutes after the restart: in its first
    # seconds only short requests finish, and the arrivals of those seconds get their lengths, which
    # pulls the output-length mean down by ~7% over one minute, ~3% over two.)
    sim = EngineSim(kind, workload=BUSY, horizon_s=170, seed=8, restarts=[T0 + 40])
    readings = [read(sim, T0 + s) for s in range(40, 161)]
    assert restarted(readings[0], readings[1])
    samples: list[Sample] = []
    carry = None
    for a, b in itertools.pairwise(readings):
        d = derive_samples(a, b, deployment="llama", pool=pool(), instance="e", carry=carry)
        samples += d.samples
        carry = d.carry
    assert compare(kind, observed(samples), sim.truth(T0 + 40, T0 + 160)) == []


def test_restart_signs() -> None:
    sim = EngineSim("vllm", horizon_s=30, seed=1)
    a, b = read(sim, T0 + 10), read(sim, T0 + 20)
    assert not restarted(a, b)
    assert restarted(a, dataclasses.replace(b, process_start_s=T0 + 15))
    assert restarted(
        dataclasses.replace(a, created=(("x", 1.0),)), dataclasses.replace(b, created=(("x", 2.0),))
    )
    assert restarted(a, dataclasses.replace(b, finished=0.0))


def test_a_long_gap_keeps_its_rates_up_to_max_gap_s() -> None:
    sim = EngineSim("vllm", workload=BUSY, horizon_s=200, seed=9)
    t0, t1 = T0 + 20, T0 + 170  # 150 s apart
    samples = derive(read(sim, t0), read(sim, t1))
    assert compare("vllm", observed(samples), sim.truth(t0, t1)) == []
    pieces = [s for s in samples if isinstance(s.payload, Throughput)]
    assert [s.payload.interval_s for s in pieces] == [60.0, 60.0, 30.0]  # each within the push limit
    assert [s.at_s for s in pieces] == [t1, t1 - 60, t1 - 120]
    # Beyond max_gap_s: a re-baseline, the queue only.
    only = derive(read(sim, t0), read(sim, t1), max_gap_s=100.0)
    assert [type(s.payload) for s in only] == [QueueState]


def test_roles_split_what_each_pool_reports() -> None:
    sim = EngineSim("vllm", workload=BUSY, horizon_s=40, seed=6)
    a, b = read(sim, T0 + 10), read(sim, T0 + 30)
    prefill = derive(a, b, Stage.PREFILL)
    assert {type(s.payload) for s in prefill} == {QueueState, Throughput}
    assert all(s.payload.decode_tokens_per_s == 0 for s in prefill if isinstance(s.payload, Throughput))
    decode = derive(a, b, Stage.DECODE)
    assert all(s.payload.prefill_tokens_per_s == 0 for s in decode if isinstance(s.payload, Throughput))
    assert any(isinstance(s.payload, Arrival) for s in decode)


def test_the_first_reading_is_a_baseline() -> None:
    sim = EngineSim("sglang", horizon_s=20, seed=2)
    d = derive_samples(None, read(sim, T0 + 10), deployment="d", pool=pool(), instance="e")
    assert d.rebaselined and [type(s.payload) for s in d.samples] == [QueueState]


def test_lifetime_lengths_with_prompts_counted_and_no_output_yet_are_not_a_division_by_zero() -> None:
    # An interval where requests arrived and none finished takes the engine's lifetime means; an
    # output histogram that has counted nothing (exported before its first observation) gave them
    # a ZeroDivisionError.
    sim = EngineSim("vllm", workload=BUSY, horizon_s=40, seed=5)
    prev, cur = read(sim, T0 + 10), read(sim, T0 + 30)
    nothing = HistogramValue(((math.inf, 0.0),), 0.0, 0.0)
    prev = dataclasses.replace(prev, output_len=nothing)
    cur = dataclasses.replace(cur, prompt_len=prev.prompt_len, output_len=nothing, finished=prev.finished)
    assert prev.prompt_len is not None and prev.prompt_len.count > 0
    samples = derive(prev, cur)
    assert not any(isinstance(s.payload, Arrival) for s in samples)  # no length known: carried, not guessed
