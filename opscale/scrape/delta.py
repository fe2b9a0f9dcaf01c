"""Two successive engine readings -> load samples (pure: no network, no clock).

- Gauges (running, waiting, KV-cache use) become a ``QueueState`` at every scrape.
- Counters become rates over the time between the two scrapes: ``Throughput`` with decode tokens/s and
  computed prefill tokens/s (prompt tokens minus prefix-cache hits).
- Histogram deltas (TTFT, TBT, e2e, prompt and output lengths) become (value, count) runs: each engine
  bucket ``(lo, hi]`` with ``c`` new observations is ``c`` observations at its midpoint; the overflow
  bucket gets the part of the sum delta the finite buckets do not explain (at least ``lo``). So
  percentiles of scraped signals are as coarse as the engine's buckets.
- Arrivals: finished requests in the interval, with their lengths from the length histograms paired
  by rank (the store keeps input and output lengths as separate distributions, so any pairing stores
  the same), or, without those histograms, the mean lengths from the token counters.

Counter resets (an engine restart): if any counter or histogram count went down, every delta of that
scrape is taken from zero, i.e. the new values (as Prometheus ``rate()`` does). The first reading, a
gap longer than ``max_gap_s`` (the target was unreachable), or a histogram whose buckets changed,
re-baseline instead: gauges only, no rates, since an average over an unknown span would be a guess.

Roles: a prefill instance contributes queue state and prefill throughput; a decode instance queue
state, decode throughput, arrivals and latencies; a serving (colocated) instance everything. In a P/D
pair both engines see every request, so counting arrivals or tokens from both would double them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from opscale.scrape.engines import EngineReading
from opscale.scrape.parse import HistogramValue
from opscale.signals import (
    DEFAULT_LIMITS,
    Arrival,
    Latency,
    LatencyKind,
    Payload,
    QueueState,
    Sample,
    Throughput,
)
from opscale.spec import PoolRef, Stage

Run = tuple[float, int]  # (value, count)


@dataclass(frozen=True, slots=True)
class Derived:
    samples: tuple[Sample, ...]
    counter_reset: bool
    rebaselined: bool  # no rates this time: first reading, a long gap or changed buckets


def _delta(prev: float | None, cur: float | None, reset: bool) -> float | None:
    if cur is None or prev is None:
        return None
    return cur if reset else max(0.0, cur - prev)


def _went_down(prev: float | None, cur: float | None) -> bool:
    return prev is not None and cur is not None and cur < prev


def _counter_reset(prev: EngineReading, cur: EngineReading) -> bool:
    counters = ("prompt_tokens", "generation_tokens", "cached_prompt_tokens", "requests")
    if any(_went_down(getattr(prev, c), getattr(cur, c)) for c in counters):
        return True
    hists = ("ttft_s", "tbt_s", "e2e_s", "prompt_len", "output_len")
    for h in hists:
        p, c = getattr(prev, h), getattr(cur, h)
        if p is not None and c is not None and p.bounds == c.bounds and c.count < p.count:
            return True
    return False


def histogram_runs(prev: HistogramValue | None, cur: HistogramValue | None, reset: bool) -> list[Run]:
    """New observations between two readings of one histogram as (representative value, count) runs."""
    if cur is None or (not reset and (prev is None or prev.bounds != cur.bounds)):
        return []
    base = None if reset or prev is None else prev
    runs: list[Run] = []
    below = 0.0  # cumulative delta up to the previous bound
    lo = 0.0
    explained = 0.0
    for i, (le, cum) in enumerate(cur.buckets):
        cum_delta = cum - (base.buckets[i][1] if base is not None else 0.0)
        count = round(max(0.0, cum_delta - below))
        below = max(below, cum_delta)
        if count:
            if math.isinf(le):
                total = cur.sum - (base.sum if base is not None else 0.0)
                rest = (total - explained) / count if math.isfinite(total) else lo
                runs.append((max(lo, rest), count))
            else:
                mid = (lo + le) / 2
                runs.append((mid, count))
                explained += mid * count
        lo = le
    return runs


def _latencies(kind: LatencyKind, runs: list[Run]) -> list[Latency]:
    cap = DEFAULT_LIMITS.max_latency_ms
    return [Latency(kind, min(v * 1000.0, cap), min(c, DEFAULT_LIMITS.max_count)) for v, c in runs]


def _tokens(v: float) -> int:
    return max(0, min(round(v), DEFAULT_LIMITS.max_tokens))


def _pair(inputs: list[Run], outputs: list[Run]) -> list[tuple[float, float, int]]:
    """Rank-pair two runs of equal total count: (input, output, count) runs."""
    out: list[tuple[float, float, int]] = []
    i = j = 0
    left_i = inputs[0][1] if inputs else 0
    left_j = outputs[0][1] if outputs else 0
    while i < len(inputs) and j < len(outputs):
        k = min(left_i, left_j)
        out.append((inputs[i][0], outputs[j][0], k))
        left_i, left_j = left_i - k, left_j - k
        if not left_i:
            i += 1
            left_i = inputs[i][1] if i < len(inputs) else 0
        if not left_j:
            j += 1
            left_j = outputs[j][1] if j < len(outputs) else 0
    return out


def _arrivals(
    prev: EngineReading, cur: EngineReading, reset: bool, prompt: float | None, gen: float | None
) -> list[Arrival]:
    cached = _delta(prev.cached_prompt_tokens, cur.cached_prompt_tokens, reset) or 0.0
    hit = min(1.0, cached / prompt) if prompt else 0.0
    inputs = histogram_runs(prev.prompt_len, cur.prompt_len, reset)
    n_in = sum(c for _, c in inputs)
    if n_in:
        outputs = histogram_runs(prev.output_len, cur.output_len, reset)
        if sum(c for _, c in outputs) != n_in:  # the two histograms disagree: use the mean output
            mean_out = (gen or 0.0) / n_in
            outputs = [(mean_out, n_in)]
        return [
            Arrival(_tokens(i), _tokens(o), _tokens(i * hit), min(k, DEFAULT_LIMITS.max_count))
            for i, o, k in _pair(inputs, outputs)
        ]
    finished = round(_delta(prev.requests, cur.requests, reset) or 0.0)
    if finished <= 0:
        return []
    mean_in = (prompt or 0.0) / finished
    return [
        Arrival(
            _tokens(mean_in),
            _tokens((gen or 0.0) / finished),
            _tokens(mean_in * hit),
            min(finished, DEFAULT_LIMITS.max_count),
        )
    ]


def derive_samples(
    prev: EngineReading | None,
    cur: EngineReading,
    *,
    deployment: str,
    pool: PoolRef,
    instance: str,
    max_gap_s: float = 60.0,
) -> Derived:
    payloads: list[Payload] = []
    if cur.running is not None and cur.waiting is not None:
        kv = cur.kv_usage if cur.kv_usage is not None else 0.0
        payloads.append(
            QueueState(max(0, round(cur.running)), max(0, round(cur.waiting)), min(1.0, max(0.0, kv)))
        )
    gap = cur.at_s - prev.at_s if prev is not None else math.inf
    reset = prev is not None and _counter_reset(prev, cur)
    rebaselined = prev is None or not 0 < gap <= max_gap_s
    if prev is not None and not rebaselined:
        prompt = _delta(prev.prompt_tokens, cur.prompt_tokens, reset)
        gen = _delta(prev.generation_tokens, cur.generation_tokens, reset)
        cached = _delta(prev.cached_prompt_tokens, cur.cached_prompt_tokens, reset) or 0.0
        stage = pool.stage
        if prompt is not None and gen is not None:
            decode = gen / gap if stage is not Stage.PREFILL else 0.0
            prefill = max(0.0, prompt - cached) / gap if stage is not Stage.DECODE else 0.0
            payloads.append(Throughput(decode, prefill, gap))
        if stage is not Stage.PREFILL:
            payloads += _arrivals(prev, cur, reset, prompt, gen)
            payloads += _latencies(LatencyKind.TTFT, histogram_runs(prev.ttft_s, cur.ttft_s, reset))
            payloads += _latencies(LatencyKind.TBT, histogram_runs(prev.tbt_s, cur.tbt_s, reset))
            payloads += _latencies(LatencyKind.E2E, histogram_runs(prev.e2e_s, cur.e2e_s, reset))
    samples = tuple(Sample(deployment, cur.at_s, p, pool, instance) for p in payloads)
    return Derived(samples, reset, rebaselined)
