"""A deployment's load over the last ``window_s`` seconds, as the decision loop and GetWindowSummary
see it, read in one ``read_many`` round trip.

Cost: ``11 + 10 * len(pools)`` series, each ``window_s / bucket_s`` bucket reads, and the arrivals
over the window's last ``RECENT_S`` seconds once more (pipelined in one round trip on Redis). The
decision loop calls this every tick for every deployment, so it passes the pools its spec has;
``pools=None`` (an operator asking "what is there?") first reads one bucket of each possible pool's
marker series to find the pools that have data, then reads only those: two round trips.

Absent data is never zero load: a mean or percentile with no observations in the window is None, a
rate is 0.0 over the window, and ``staleness_s[signal]`` (None: never seen within retention) tells
"idle" from "not reporting".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from opscale.counters import CounterStore, HistogramBin, Kind, ReadQuery, WindowRead
from opscale.errors import InvalidArgument
from opscale.pools import PoolKey
from opscale.signals import series as S

PERCENTILES = (0.5, 0.9, 0.99)
# The short window read beside the long one (Knative's autoscaler reads a panic window of 10% of its
# stable one, 6 s of 60 s by default; ours is 5 s of the 30 s decision window).
RECENT_S = 5.0


@dataclass(frozen=True, slots=True)
class Distribution:
    """A histogram series over the window: observation count, mean, percentiles and the bins."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    bins: tuple[HistogramBin, ...]
    min: float | None = None  # smallest and largest observation in the window
    max: float | None = None


@dataclass(frozen=True, slots=True)
class PoolSummary:
    pool: PoolKey
    queue_waiting_mean: float | None  # per reporting instance and sample
    queue_running_mean: float | None
    kv_cache_usage_fraction: float | None  # mean over instances and samples, in [0, 1]
    busy_fraction: float | None  # total busy seconds / total interval seconds reported
    batch_size_mean: float | None
    decode_tokens_per_s: float  # summed over the pool's instances
    prefill_tokens_per_s: float
    staleness_s: Mapping[str, float | None]  # "queue", "busy", "throughput"


@dataclass(frozen=True, slots=True)
class WindowSummary:
    deployment: str
    window_s: float
    start_s: float  # the window is [start_s, end_s): closed buckets only
    end_s: float
    arrivals: int
    arrivals_per_s: float
    input_tokens: Distribution
    output_tokens: Distribution
    cached_input_fraction: float | None  # prefix-cache share of prompt tokens
    ttft_ms: Distribution
    tbt_ms: Distribution
    e2e_ms: Distribution
    decode_tokens_per_s: float
    prefill_tokens_per_s: float  # computed (cache-missed) prefill tokens
    gpu_utilization_fraction: float | None
    gpu_power_watts: float | None  # mean per GPU sample
    pools: tuple[PoolSummary, ...]
    staleness_s: Mapping[str, float | None]  # every name in series.SIGNALS
    # Arrivals in the last ``recent_s`` seconds of the window (its newest closed buckets), where the
    # window is longer than that: the first sign of a burst, which a 30 s mean shows late
    # (``opscale.policy.recent``). None when the window is no longer than ``RECENT_S``.
    recent_arrivals: int | None = None
    recent_s: float = 0.0

    def pool(self, pool: PoolKey) -> PoolSummary | None:
        return next((p for p in self.pools if p.pool == pool), None)


# Deployment-wide queries, in this order, before the pools' (each pool: series.POOL_SERIES in order).
_DEPLOYMENT_SERIES: tuple[tuple[str, Kind], ...] = (
    (S.INPUT_TOKENS, Kind.HISTOGRAM),
    (S.OUTPUT_TOKENS, Kind.HISTOGRAM),
    (S.TTFT_MS, Kind.HISTOGRAM),
    (S.TBT_MS, Kind.HISTOGRAM),
    (S.E2E_MS, Kind.HISTOGRAM),
    (S.CACHED_INPUT_TOKENS, Kind.COUNTER),
    (S.DECODE_TOKENS, Kind.COUNTER),
    (S.PREFILL_TOKENS, Kind.COUNTER),
    (S.GPU_SAMPLES, Kind.COUNTER),
    (S.GPU_UTILIZATION_SUM, Kind.COUNTER),
    (S.GPU_POWER_WATTS_SUM, Kind.COUNTER),
)
_MARKERS = tuple(S.POOL_SIGNAL_SERIES.values())


@functools.lru_cache(maxsize=4096)
def _queries(
    deployment: str, window_s: float, pools: tuple[PoolKey, ...], recent_s: float
) -> tuple[ReadQuery, ...]:
    out = [ReadQuery(S.deployment_key(deployment, name), kind, window_s) for name, kind in _DEPLOYMENT_SERIES]
    for pool in pools:
        out += [
            ReadQuery(S.pool_key(deployment, name, pool), Kind.COUNTER, window_s) for name in S.POOL_SERIES
        ]
    if recent_s:
        out.append(ReadQuery(S.deployment_key(deployment, S.INPUT_TOKENS), Kind.HISTOGRAM, recent_s))
    return tuple(out)


def recent_window(window_s: float, bucket_s: float) -> float:
    """The short window read beside ``window_s``: ``RECENT_S`` in whole buckets (at least one); 0 when
    that is not shorter than the window."""
    recent = max(1, math.floor(RECENT_S / bucket_s)) * bucket_s
    return recent if recent < window_s else 0.0


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _capped(fraction: float | None) -> float | None:
    """Histogram sums carry float rounding; a share is never above 1."""
    return None if fraction is None else min(1.0, fraction)


def _distribution(r: WindowRead) -> Distribution:
    p50, p90, p99 = r.quantiles(PERCENTILES)
    return Distribution(r.count, r.mean, p50, p90, p99, r.bins, r.min_value, r.max_value)


def _pool_summary(pool: PoolKey, reads: Sequence[WindowRead]) -> PoolSummary:
    by = dict(zip(S.POOL_SERIES, reads, strict=True))
    queue_n = by[S.QUEUE_SAMPLES].sum
    return PoolSummary(
        pool=pool,
        queue_waiting_mean=_ratio(by[S.QUEUE_WAITING_SUM].sum, queue_n),
        queue_running_mean=_ratio(by[S.QUEUE_RUNNING_SUM].sum, queue_n),
        kv_cache_usage_fraction=_ratio(by[S.KV_CACHE_USAGE_SUM].sum, queue_n),
        busy_fraction=_ratio(by[S.BUSY_S].sum, by[S.BUSY_INTERVAL_S].sum),
        batch_size_mean=_ratio(by[S.BATCH_SIZE_SUM].sum, by[S.BUSY_SAMPLES].sum),
        decode_tokens_per_s=by[S.DECODE_TOKENS].rate_per_s,
        prefill_tokens_per_s=by[S.PREFILL_TOKENS].rate_per_s,
        staleness_s=MappingProxyType(
            {signal: by[name].staleness_s for signal, name in S.POOL_SIGNAL_SERIES.items()}
        ),
    )


def _freshest(values: Sequence[float | None]) -> float | None:
    seen = [v for v in values if v is not None]
    return min(seen) if seen else None


def check_window(window_s: float, bucket_s: float, retention_s: float) -> float:
    """``window_s`` as a float, or ``InvalidArgument``: it must be a whole number of buckets within
    retention (the store reads whole buckets)."""
    ok = isinstance(window_s, int | float) and not isinstance(window_s, bool) and math.isfinite(window_s)
    n = window_s / bucket_s if ok and 0 < window_s <= retention_s else 0.5
    if n != int(n):
        raise InvalidArgument(
            f"window_s must be in (0, {retention_s:g}] and a whole number of {bucket_s:g} s buckets, "
            f"got {window_s!r}",
            field="window_s",
        )
    return float(window_s)


async def discover_pools(store: CounterStore, deployment: str, *, now_s: float) -> tuple[PoolKey, ...]:
    """Pools of ``deployment`` with any queue, busy or throughput data still retained (one bucket read
    of each pool's marker series: their staleness comes from the series meta, whatever the window)."""
    bucket_s = store.settings.bucket_s
    queries = [
        ReadQuery(S.pool_key(deployment, name, pool), Kind.COUNTER, bucket_s)
        for pool in S.ALL_POOLS
        for name in _MARKERS
    ]
    reads = await store.read_many(queries, now_s=now_s)
    n = len(_MARKERS)
    return tuple(
        pool
        for i, pool in enumerate(S.ALL_POOLS)
        if any(r.last_write_s is not None for r in reads[i * n : (i + 1) * n])
    )


async def read_window_summary(
    store: CounterStore,
    deployment: str,
    *,
    now_s: float,
    window_s: float,
    pools: Sequence[PoolKey] | None = None,
) -> WindowSummary:
    """``deployment``'s load over the closed buckets of the last ``window_s`` seconds before ``now_s``.

    ``pools``: report these (each, even with no data) in one round trip; None: discover the pools that
    have data first (see the module docstring). ``window_s`` must be a whole number of buckets.
    """
    settings = store.settings
    window_s = check_window(window_s, settings.bucket_s, settings.retention_s)
    if pools is None:
        pools = await discover_pools(store, deployment, now_s=now_s)
    chosen = tuple(dict.fromkeys(pools))  # de-duplicated, order kept
    recent_s = recent_window(window_s, settings.bucket_s)
    reads = await store.read_many(_queries(deployment, window_s, chosen, recent_s), now_s=now_s)
    d = dict(zip((name for name, _ in _DEPLOYMENT_SERIES), reads, strict=False))
    n_dep, n_pool = len(_DEPLOYMENT_SERIES), len(S.POOL_SERIES)
    pool_summaries = tuple(
        _pool_summary(pool, reads[n_dep + i * n_pool : n_dep + (i + 1) * n_pool])
        for i, pool in enumerate(chosen)
    )
    inputs = d[S.INPUT_TOKENS]
    gpu_n = d[S.GPU_SAMPLES].sum
    staleness: dict[str, float | None] = {
        signal: d[name].staleness_s for signal, name in S.SIGNAL_SERIES.items()
    }
    for signal in ("queue", "busy"):
        staleness[signal] = _freshest([p.staleness_s[signal] for p in pool_summaries])
    return WindowSummary(
        deployment=deployment,
        window_s=window_s,
        start_s=inputs.start_s,
        end_s=inputs.end_s,
        arrivals=inputs.count,
        arrivals_per_s=inputs.count_per_s,
        input_tokens=_distribution(inputs),
        output_tokens=_distribution(d[S.OUTPUT_TOKENS]),
        cached_input_fraction=_capped(_ratio(d[S.CACHED_INPUT_TOKENS].sum, inputs.sum)),
        ttft_ms=_distribution(d[S.TTFT_MS]),
        tbt_ms=_distribution(d[S.TBT_MS]),
        e2e_ms=_distribution(d[S.E2E_MS]),
        decode_tokens_per_s=d[S.DECODE_TOKENS].rate_per_s,
        prefill_tokens_per_s=d[S.PREFILL_TOKENS].rate_per_s,
        gpu_utilization_fraction=_ratio(d[S.GPU_UTILIZATION_SUM].sum, gpu_n),
        gpu_power_watts=_ratio(d[S.GPU_POWER_WATTS_SUM].sum, gpu_n),
        pools=pool_summaries,
        staleness_s=MappingProxyType(staleness),
        recent_arrivals=reads[-1].count if recent_s else None,
        recent_s=recent_s,
    )
