"""Two successive readings of one model on one endpoint -> load samples (pure: no network, no clock).

Each signal's source, per engine, is in docs/signals.md; in short:

- **Queue** (every scrape): running and waiting summed over the engines, KV-cache use the max.
- **Arrivals**: the engine's counter of received requests where it has one (SGLang); otherwise
  conservation — finished + Δ(running + waiting) — since every request that arrived in the interval
  either finished or is still in the engine (vLLM counts requests only when they finish).
  ``Derived.arrivals_from`` says which.
- **Lengths** of those arrivals: the per-request length histograms of the requests that finished in
  the interval, spread by ``spread`` (mean exact from ``_sum/_count``), scaled to the number of
  arrivals; without histograms, the mean from the counters bumped at finish. Engines count lengths
  only when a request finishes; when none finished in the interval, the last lengths seen
  (``Carry.lengths``, kept by the caller between scrapes) stand in, else the engine's lifetime
  means. Before any request has finished (a cold engine) no length is known: those arrivals are held
  (``Carry.pending``) and written with the first lengths seen, a few seconds late rather than with
  made-up lengths.
- **Token rates**: counters that grow while tokens are generated (vLLM's token counters, SGLang's
  ``realtime_tokens_total``), over the time between the two scrapes; prefill counts computed tokens
  only (prefix-cache hits left out).
- **Latencies**: TTFT, TBT, e2e histograms, spread as above (percentiles as ``histogram_quantile``).

Restarts: if the process start time or any counter's ``_created`` time changed, or any counter or
histogram bucket went down, the engine restarted: every delta of that scrape is taken from zero, i.e.
the new values, as Prometheus' ``increase()`` does, and the queue it had before counts as empty.
The first reading, a gap longer than ``max_gap_s`` and changed histogram buckets re-baseline instead:
the queue only, no rates. Gaps up to ``max_gap_s`` keep their rates, written as throughput samples of
at most ``Limits.max_throughput_interval_s`` each.

Roles: a prefill instance contributes queue state and prefill throughput; a decode instance queue
state, decode throughput, arrivals and latencies; a serving (colocated) instance everything. In a P/D
pair both engines see every request, so counting arrivals or tokens from both would double them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from opscale.scrape.engines import COUNTER_FIELDS, HISTOGRAM_FIELDS, EngineReading
from opscale.scrape.spread import HistogramDelta, Run, histogram_delta, spread
from opscale.signals import (
    DEFAULT_LIMITS,
    HISTOGRAMS,
    Arrival,
    Latency,
    LatencyKind,
    Payload,
    QueueState,
    Sample,
    Throughput,
)
from opscale.spec import PoolRef, Stage

DEFAULT_MAX_GAP_S = 300.0


@dataclass(frozen=True, slots=True)
class Derived:
    samples: tuple[Sample, ...]
    counter_reset: bool
    rebaselined: bool  # no rates this time: first reading, a long gap or changed buckets
    arrivals_from: str  # "counter", "conservation" or "" (no arrivals this time)
    carry: Carry  # pass to the next derive_samples of this model


@dataclass(frozen=True, slots=True)
class Carry:
    """What one derive hands the next (the caller stores it with the reading)."""

    lengths: tuple[float, float] | None = None  # mean (input, output) lengths last seen
    pending: int = 0  # arrivals not written yet: no length was known


def _delta(prev: float | None, cur: float | None, reset: bool) -> float | None:
    if cur is None or (prev is None and not reset):
        return None
    return cur if reset or prev is None else max(0.0, cur - prev)


def restarted(prev: EngineReading, cur: EngineReading) -> bool:
    """Did the engine restart between the two readings?"""
    p_start, c_start = prev.process_start_s, cur.process_start_s
    if p_start is not None and c_start is not None and abs(c_start - p_start) > 1e-3:
        return True
    before = dict(prev.created)
    if any(name in before and abs(ts - before[name]) > 1e-3 for name, ts in cur.created):
        return True
    for c in COUNTER_FIELDS:
        p, q = getattr(prev, c), getattr(cur, c)
        if p is not None and q is not None and q < p:
            return True
    for h in HISTOGRAM_FIELDS:
        p, q = getattr(prev, h), getattr(cur, h)
        # Bucket by bucket: a restarted engine that has counted more in total since may still have
        # fewer in some bucket (SGLang exports neither a start time nor _created samples).
        same = p is not None and q is not None and p.bounds == q.bounds
        if same and any(b < a for (_, a), (_, b) in zip(p.buckets, q.buckets, strict=True)):
            return True
    return False


def _tokens(v: float) -> int:
    return max(0, min(round(v), DEFAULT_LIMITS.max_tokens))


def _pair(inputs: list[Run], outputs: list[Run]) -> list[tuple[float, float, int]]:
    """Rank-pair two runs of equal total count: (input, output, count). The store keeps input and
    output lengths as separate distributions, so any pairing stores the same."""
    out: list[tuple[float, float, int]] = []
    i = j = 0
    left_i = inputs[0][1] if inputs else 0
    left_j = outputs[0][1] if outputs else 0
    while i < len(inputs) and j < len(outputs):
        k = min(left_i, left_j)
        if k:
            out.append((inputs[i][0], outputs[j][0], k))
        left_i, left_j = left_i - k, left_j - k
        if not left_i:
            i += 1
            left_i = inputs[i][1] if i < len(inputs) else 0
        if not left_j:
            j += 1
            left_j = outputs[j][1] if j < len(outputs) else 0
    return out


def _lengths(
    hist: HistogramDelta | None, finished: float | None, count_at_finish: float | None, n: int, name: str
) -> list[Run]:
    """``n`` lengths: the histogram's distribution scaled to n, else n at the mean of the counters."""
    if hist is not None and hist.count > 0:
        return spread(hist, HISTOGRAMS[name], counts=hist.scaled(n / hist.count))
    if finished and count_at_finish is not None:
        return [(count_at_finish / finished, n)]
    return []


def _mean(runs: list[Run]) -> float:
    n = sum(c for _, c in runs)
    return sum(v * c for v, c in runs) / n if n else 0.0


def _lifetime(r: EngineReading) -> tuple[float, float] | None:
    """Mean lengths of every request the engine finished since it started (None: none finished)."""
    p, o = r.prompt_len, r.output_len
    if p is not None and o is not None and min(p.count, o.count) > 0 and math.isfinite(p.sum + o.sum):
        return p.sum / p.count, o.sum / o.count
    if r.finished and r.finished_prompt_tokens is not None and r.finished_output_tokens is not None:
        return r.finished_prompt_tokens / r.finished, r.finished_output_tokens / r.finished
    return None


def _arrivals(
    prev: EngineReading, cur: EngineReading, reset: bool, carry: Carry
) -> tuple[list[Arrival], str, Carry]:
    """(arrivals, where their number came from, what to carry to the next interval)."""
    received = _delta(prev.arrivals, cur.arrivals, reset)
    finished = _delta(prev.finished, cur.finished, reset)
    if received is not None:
        n, source = round(received), "counter"
    elif finished is not None and cur.queued is not None:
        before = 0.0 if reset else (prev.queued if prev.queued is not None else cur.queued)
        n, source = max(0, round(finished + cur.queued - before)), "conservation"
    else:
        return [], "", carry
    n += carry.pending
    prompts = histogram_delta(prev.prompt_len, cur.prompt_len, reset)
    outputs = histogram_delta(prev.output_len, cur.output_len, reset)
    fp = _delta(prev.finished_prompt_tokens, cur.finished_prompt_tokens, reset)
    fo = _delta(prev.finished_output_tokens, cur.finished_output_tokens, reset)
    ins = _lengths(prompts, finished, fp, max(n, 1), "input_tokens")
    outs = _lengths(outputs, finished, fo, max(n, 1), "output_tokens")
    if ins and outs:
        lengths: tuple[float, float] | None = (_mean(ins), _mean(outs))
    else:  # nothing finished in the interval: the last lengths seen, else the engine's lifetime means
        lengths = carry.lengths or _lifetime(cur) or _lifetime(prev)
        if lengths is None:
            return [], source, Carry(None, n)
        ins, outs = [(lengths[0], n)], [(lengths[1], n)]
    if n <= 0:
        return [], source, Carry(lengths, 0)
    hits = _delta(prev.cache_hits, cur.cache_hits, reset)
    base = _delta(prev.prompt_tokens, cur.prompt_tokens, reset)
    hit = min(1.0, hits / base) if hits and base else 0.0
    cap = DEFAULT_LIMITS.max_count
    arrivals = [
        Arrival(_tokens(i), _tokens(o), _tokens(i * hit), min(k, cap)) for i, o, k in _pair(ins, outs)
    ]
    return arrivals, source, Carry(lengths, 0)


def _latencies(
    kind: LatencyKind, prev: EngineReading, cur: EngineReading, attr: str, reset: bool
) -> list[Latency]:
    delta = histogram_delta(getattr(prev, attr), getattr(cur, attr), reset)
    if delta is None or delta.count == 0:
        return []
    cap = DEFAULT_LIMITS.max_latency_ms
    runs = spread(delta, HISTOGRAMS[kind.value], unit=1000.0)
    return [Latency(kind, min(v, cap), min(c, DEFAULT_LIMITS.max_count)) for v, c in runs]


def _throughput(
    prev: EngineReading, cur: EngineReading, reset: bool, stage: str
) -> list[tuple[float, Throughput]]:
    """(end time, sample) pieces of at most max_throughput_interval_s covering the gap."""
    gap = cur.at_s - prev.at_s
    decode = _delta(prev.decode_tokens, cur.decode_tokens, reset)
    prefill = _delta(prev.prefill_computed, cur.prefill_computed, reset)
    if prefill is None:
        prompt = _delta(prev.prompt_tokens, cur.prompt_tokens, reset)
        hits = _delta(prev.cache_hits, cur.cache_hits, reset) or 0.0
        prefill = None if prompt is None else max(0.0, prompt - hits)
    if decode is None and prefill is None:
        return []
    d = (decode or 0.0) / gap if stage != Stage.PREFILL else 0.0
    p = (prefill or 0.0) / gap if stage != Stage.DECODE else 0.0
    step = DEFAULT_LIMITS.max_throughput_interval_s
    pieces = []
    end = cur.at_s
    while end > prev.at_s + 1e-9:
        length = min(step, end - prev.at_s)
        pieces.append((end, Throughput(d, p, length)))
        end -= length
    return pieces


def derive_samples(
    prev: EngineReading | None,
    cur: EngineReading,
    *,
    deployment: str,
    pool: PoolRef,
    instance: str,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    carry: Carry | None = None,
) -> Derived:
    at = cur.at_s
    out: list[Sample] = []
    if cur.running is not None and cur.waiting is not None:
        kv = min(1.0, max(0.0, cur.kv_usage if cur.kv_usage is not None else 0.0))
        queue = QueueState(max(0, round(cur.running)), max(0, round(cur.waiting)), kv)
        out.append(Sample(deployment, at, queue, pool, instance))
    gap = at - prev.at_s if prev is not None else math.inf
    reset = prev is not None and restarted(prev, cur)
    rebaselined = prev is None or not 0 < gap <= max_gap_s
    source, carry = "", carry or Carry()
    if prev is not None and not rebaselined:
        out += [
            Sample(deployment, end, t, pool, instance) for end, t in _throughput(prev, cur, reset, pool.stage)
        ]
        if pool.stage != Stage.PREFILL:
            payloads: list[Payload] = []
            arrivals, source, carry = _arrivals(prev, cur, reset, carry)
            payloads += arrivals
            payloads += _latencies(LatencyKind.TTFT, prev, cur, "ttft_s", reset)
            payloads += _latencies(LatencyKind.TBT, prev, cur, "tbt_s", reset)
            payloads += _latencies(LatencyKind.E2E, prev, cur, "e2e_s", reset)
            out += [Sample(deployment, at, p, pool, instance) for p in payloads]
    return Derived(tuple(out), reset, rebaselined, source, carry)
