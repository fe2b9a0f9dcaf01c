"""Counter-store windows -> the policy's ``LoadWindow``, and ``LoadWindow`` <-> the ledger's JSON.

Absent data stays absent: a percentile with no observation is None, and a signal never written has
staleness None, which the stabilizer treats as stale (fail-static: hold, never scale in). An empty
counter store therefore yields a recorded "held: signals stale" decision, not a scale-in to zero.

Idle is not silence. An engine that serves no request writes no arrival, so the arrival series ages
as if its reporter had died; but the engines still report their token counters every interval (the
scraper writes each scrape's delta, zero included). Where the window holds no arrival and those
counters are fresh and show no work at all, the engines were watched and idle: the arrival rate is a
measured 0, as old as the freshest of them (``_arrivals_age``). Without this an idle deployment never
scaled in: on Azure code's silent minutes the policies held a burst's replicas for the whole lull and
then, at the first request of the next burst, scaled in to the quiet plan (BENCHMARKS.md, 2026-12-07).
Work without arrivals (a gateway that stopped pushing while engines decode) stays stale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from opscale.counters import CounterStore
from opscale.policy.lengths import LengthDist
from opscale.policy.types import LoadWindow, PoolKey, Signal
from opscale.pools import OperatorKind, Stage
from opscale.signals.summary import Distribution, WindowSummary, read_window_summary

DEFAULT_WINDOW_S = 30.0
# Series every engine report writes, work or none (opscale.scrape.delta's throughput pieces).
ENGINE_COUNTERS = ("decode_tokens", "prefill_tokens")

# Which counter-store signal (opscale.signals.series.SIGNALS) stands for each policy signal.
SIGNAL_SOURCE: Mapping[Signal, str] = {
    Signal.ARRIVAL_RATE: "arrivals",
    Signal.TOKEN_LENGTHS: "arrivals",
    Signal.DECODE_TPS: "decode_tokens",
    Signal.PREFILL_TPS: "prefill_tokens",
    Signal.TTFT: "ttft",
    Signal.TBT: "tbt",
    Signal.QUEUE_DEPTH: "queue",
    Signal.KV_CACHE: "queue",
    Signal.GPU_UTILIZATION: "gpu",
    Signal.BUSY_FRACTION: "busy",
}


def window_for(bucket_s: float, wanted_s: float = DEFAULT_WINDOW_S) -> float:
    """The store reads whole buckets: the smallest whole number of buckets covering ``wanted_s``."""
    return max(1, math.ceil(wanted_s / bucket_s - 1e-9)) * bucket_s


def _frac(value: float | None) -> float | None:
    # Sampling jitter can push a share a little over 1; the policy types reject > 1.5, so cap at 1.
    return None if value is None else min(1.0, max(0.0, value))


def _known(pool: PoolKey) -> bool:
    return pool.stage in Stage.__members__.values() and pool.operator in OperatorKind.__members__.values()


POOL_SOURCES = frozenset({"queue", "busy"})  # staleness the summary derives from pool series


def length_dist(d: Distribution) -> LengthDist | None:
    """A window's length histogram as the planners' ``LengthDist`` (None with no observations)."""
    if not d.count or not d.bins:
        return None
    return LengthDist.from_bins([(b.lower, b.upper, b.count) for b in d.bins], d.min, d.max)


def to_load_window(summary: WindowSummary, pools_read: bool = True) -> LoadWindow:
    """``pools_read``: whether the summary was asked for pools; if not, the pool-derived signals are
    left out of ``staleness_s`` rather than reported as never seen."""
    queue: dict[PoolKey, float] = {}
    busy: dict[PoolKey, float] = {}
    kv: list[float] = []
    for p in summary.pools:
        key = PoolKey(str(p.pool.stage), str(p.pool.operator))
        if p.queue_waiting_mean is not None:
            queue[key] = p.queue_waiting_mean
        if p.busy_fraction is not None:
            busy[key] = min(1.0, p.busy_fraction)
        if p.kv_cache_usage_fraction is not None:
            kv.append(p.kv_cache_usage_fraction)
    staleness: dict[Signal, float | None] = {}
    for signal, source in SIGNAL_SOURCE.items():
        if source in POOL_SOURCES and not pools_read:
            continue  # not read this tick (see policies.POLICIES_READING_POOLS): not reported at all
        age = _arrivals_age(summary) if source == "arrivals" else summary.staleness_s.get(source)
        staleness[signal] = None if age is None else max(0.0, age)
    return LoadWindow(
        window_s=summary.window_s,
        arrival_rate_rps=summary.arrivals_per_s,
        input_tokens_mean=summary.input_tokens.mean or 0.0,
        input_tokens_p99=summary.input_tokens.p99 or 0.0,
        output_tokens_mean=summary.output_tokens.mean or 0.0,
        output_tokens_p99=summary.output_tokens.p99 or 0.0,
        decode_tps=summary.decode_tokens_per_s,
        prefill_uncached_tps=summary.prefill_tokens_per_s,
        ttft_p50_ms=summary.ttft_ms.p50,
        ttft_p99_ms=summary.ttft_ms.p99,
        tbt_p50_ms=summary.tbt_ms.p50,
        tbt_p99_ms=summary.tbt_ms.p99,
        queue_depth=queue,
        kv_cache_use=_frac(max(kv)) if kv else None,  # the fullest pool is the one that matters
        gpu_utilization=_frac(summary.gpu_utilization_fraction),
        busy_fraction=busy,
        staleness_s=staleness,
        input_tokens_dist=length_dist(summary.input_tokens),
        output_tokens_dist=length_dist(summary.output_tokens),
        recent_arrivals=summary.recent_arrivals,
        recent_s=summary.recent_s,
    )


def _arrivals_age(summary: WindowSummary) -> float | None:
    """The arrival series' age, or where the window holds no arrival and the engines' token counters are
    fresher and show no work in it, theirs (module docstring)."""
    age = summary.staleness_s.get("arrivals")
    if summary.arrivals or summary.decode_tokens_per_s > 0.0 or summary.prefill_tokens_per_s > 0.0:
        return age
    ages = [a for a in (age, *(summary.staleness_s.get(s) for s in ENGINE_COUNTERS)) if a is not None]
    return min(ages) if ages else None


async def read_load(
    store: CounterStore, deployment: str, pools: Sequence[PoolKey], *, now_s: float, window_s: float
) -> LoadWindow:
    load, _summary = await read_load_and_summary(store, deployment, pools, now_s=now_s, window_s=window_s)
    return load


async def read_load_and_summary(
    store: CounterStore, deployment: str, pools: Sequence[PoolKey], *, now_s: float, window_s: float
) -> tuple[LoadWindow, WindowSummary]:
    """``read_load``, and the window summary it came from (its histograms give SLO attainment)."""
    refs = [p for p in pools if _known(p)]
    summary = await read_window_summary(store, deployment, now_s=now_s, window_s=window_s, pools=refs)
    return to_load_window(summary, pools_read=bool(refs)), summary


def share_at_most(d: Distribution, limit: float) -> float | None:
    """The share of the window's observations at or below ``limit`` (SLO attainment of one signal),
    interpolated linearly inside the bin that straddles it; None with no observations."""
    total = sum(b.count for b in d.bins)
    if not total:
        return None
    within = 0.0
    for b in d.bins:
        if b.upper <= limit:
            within += b.count
        elif b.lower < limit and math.isfinite(b.upper):
            within += b.count * (limit - b.lower) / (b.upper - b.lower)
    return min(1.0, within / total)


# --- ledger JSON ---------------------------------------------------------------------------------------


def _pools_json(values: Mapping[PoolKey, float]) -> dict[str, float]:
    return {str(k): v for k, v in sorted(values.items())}


def load_to_json(load: LoadWindow) -> dict[str, Any]:
    """Every field, so a recorded tick can be replayed through the same policy offline."""
    return {
        "window_s": load.window_s,
        "arrival_rate_rps": load.arrival_rate_rps,
        "input_tokens_mean": load.input_tokens_mean,
        "input_tokens_p99": load.input_tokens_p99,
        "output_tokens_mean": load.output_tokens_mean,
        "output_tokens_p99": load.output_tokens_p99,
        "decode_tps": load.decode_tps,
        "prefill_uncached_tps": load.prefill_uncached_tps,
        "ttft_p50_ms": load.ttft_p50_ms,
        "ttft_p99_ms": load.ttft_p99_ms,
        "tbt_p50_ms": load.tbt_p50_ms,
        "tbt_p99_ms": load.tbt_p99_ms,
        "queue_depth": _pools_json(load.queue_depth),
        "kv_cache_use": load.kv_cache_use,
        "gpu_utilization": load.gpu_utilization,
        "gpu_utilization_by_pool": _pools_json(load.gpu_utilization_by_pool),
        "busy_fraction": _pools_json(load.busy_fraction),
        "staleness_s": {str(k): v for k, v in sorted(load.staleness_s.items())},
        "input_tokens_dist": load.input_tokens_dist.to_json() if load.input_tokens_dist else None,
        "output_tokens_dist": load.output_tokens_dist.to_json() if load.output_tokens_dist else None,
        "recent_arrivals": load.recent_arrivals,
        "recent_s": load.recent_s,
    }


def _opt(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return None if value is None else float(value)


def load_from_json(data: Mapping[str, Any]) -> LoadWindow:
    def pools(key: str) -> dict[PoolKey, float]:
        return {PoolKey.parse(k): float(v) for k, v in dict(data.get(key) or {}).items()}

    return LoadWindow(
        window_s=float(data["window_s"]),
        arrival_rate_rps=float(data.get("arrival_rate_rps", 0.0)),
        input_tokens_mean=float(data.get("input_tokens_mean", 0.0)),
        input_tokens_p99=float(data.get("input_tokens_p99", 0.0)),
        output_tokens_mean=float(data.get("output_tokens_mean", 0.0)),
        output_tokens_p99=float(data.get("output_tokens_p99", 0.0)),
        decode_tps=float(data.get("decode_tps", 0.0)),
        prefill_uncached_tps=float(data.get("prefill_uncached_tps", 0.0)),
        ttft_p50_ms=_opt(data, "ttft_p50_ms"),
        ttft_p99_ms=_opt(data, "ttft_p99_ms"),
        tbt_p50_ms=_opt(data, "tbt_p50_ms"),
        tbt_p99_ms=_opt(data, "tbt_p99_ms"),
        queue_depth=pools("queue_depth"),
        kv_cache_use=_opt(data, "kv_cache_use"),
        gpu_utilization=_opt(data, "gpu_utilization"),
        gpu_utilization_by_pool=pools("gpu_utilization_by_pool"),
        busy_fraction=pools("busy_fraction"),
        staleness_s={
            Signal(k): (None if v is None else float(v))
            for k, v in dict(data.get("staleness_s") or {}).items()
        },
        input_tokens_dist=_dist(data, "input_tokens_dist"),
        output_tokens_dist=_dist(data, "output_tokens_dist"),
        recent_arrivals=None if data.get("recent_arrivals") is None else int(data["recent_arrivals"]),
        recent_s=float(data.get("recent_s") or 0.0),
    )


def _dist(data: Mapping[str, Any], key: str) -> LengthDist | None:
    value = data.get(key)
    return None if value is None else LengthDist.from_json(value)


def max_staleness(load: LoadWindow) -> float | None:
    """The oldest signal's age; None when a signal was never seen (infinitely stale)."""
    ages = list(load.staleness_s.values())
    if not ages or any(a is None for a in ages):
        return None
    return max(a for a in ages if a is not None)
