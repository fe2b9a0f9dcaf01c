"""The series metrics-ingest writes and the decision loop reads: names, labels, histogram layouts.

Defined once here; nothing else spells a series name. Every series lives in the namespace of its
deployment. Deployment-wide series have no labels; pool series carry ``stage`` and ``operator``
(``PoolKey`` values). The serving instance is never a label: pools can have hundreds of instances,
and the decision loop wants the pool, so instances are summed at write time.

Why pool state is stored as counters, not gauges. A gauge write keeps sum, count, min, max and the
newest value of its bucket, and the store folds every gauge write on its own (measured ~3.5 µs per
write in ``counters.batch.prepare``). The loop only needs window means, which are
``sum(values) / samples``; two counters (``…_sum`` and ``…_samples``) give exactly that and a whole
batch folds into one write per series and bucket. Min/max/newest are given up for that.

Histograms (TTFT, TBT, e2e, input and output lengths) use the bins below. A layout must not change
while data written with it is retained (bins are stored by index), so changing one means a new
series name.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from opscale.counters import HistogramLayout, SeriesKey, StoreSettings
from opscale.pools import OperatorKind, PoolKey, Stage

# --- deployment-wide series -------------------------------------------------------------------------
# Histograms: one observation per request (arrivals) or per latency observation.
INPUT_TOKENS = "input_tokens"  # prompt length of each arriving request; its count is the arrivals
OUTPUT_TOKENS = "output_tokens"  # output length of each arriving request (as the client reports it)
TTFT_MS = "ttft_ms"
TBT_MS = "tbt_ms"
E2E_MS = "e2e_ms"
# Counters (sum per bucket).
CACHED_INPUT_TOKENS = "cached_input_tokens"  # prompt tokens served from the prefix cache
DECODE_TOKENS = "decode_tokens"  # also a pool series (with labels)
PREFILL_TOKENS = "prefill_tokens"  # prefill tokens actually computed (cache misses); also per pool
GPU_SAMPLES = "gpu_samples"  # one per GPU telemetry sample: the denominator of the two below
GPU_UTILIZATION_SUM = "gpu_utilization_sum"
GPU_POWER_WATTS_SUM = "gpu_power_watts_sum"

# --- pool series (labels stage, operator), all counters -----------------------------------------------
QUEUE_SAMPLES = "queue_samples"  # denominator of the three queue sums
QUEUE_WAITING_SUM = "queue_waiting_sum"
QUEUE_RUNNING_SUM = "queue_running_sum"
KV_CACHE_USAGE_SUM = "kv_cache_usage_sum"
BUSY_SAMPLES = "busy_samples"  # denominator of batch_size_sum
BUSY_S = "busy_s"
BUSY_INTERVAL_S = "busy_interval_s"
BATCH_SIZE_SUM = "batch_size_sum"
POOL_SERIES = (
    QUEUE_SAMPLES,
    QUEUE_WAITING_SUM,
    QUEUE_RUNNING_SUM,
    KV_CACHE_USAGE_SUM,
    BUSY_SAMPLES,
    BUSY_S,
    BUSY_INTERVAL_S,
    BATCH_SIZE_SUM,
    DECODE_TOKENS,
    PREFILL_TOKENS,
)

# --- signals: what staleness is reported for, and which series stands for each ------------------------
# A signal is alive when its series has had a write; a counter write of 0 (an idle engine) counts, so
# "no load" and "no data" stay distinguishable.
SIGNAL_SERIES: Mapping[str, str] = {
    "arrivals": INPUT_TOKENS,
    "ttft": TTFT_MS,
    "tbt": TBT_MS,
    "e2e": E2E_MS,
    "decode_tokens": DECODE_TOKENS,
    "prefill_tokens": PREFILL_TOKENS,
    "gpu": GPU_SAMPLES,
}
POOL_SIGNAL_SERIES: Mapping[str, str] = {
    "queue": QUEUE_SAMPLES,
    "busy": BUSY_SAMPLES,
    "throughput": DECODE_TOKENS,
}
# Deployment-wide staleness of a pool signal is that of its freshest pool.
SIGNALS = (*SIGNAL_SERIES, "queue", "busy")

# --- histogram layouts -------------------------------------------------------------------------------
# 8 bins per doubling everywhere: each bin is 2**(1/8) - 1 ≈ 9% wide, so a quantile is within ~9% (and
# linear interpolation inside the bin usually does much better). Bin 0 is [0, start].
# TTFT: 1 ms .. 2**17 ms ≈ 131 s (136 bins), beyond which is the overflow bin (its top is the max seen).
TTFT_LAYOUT = HistogramLayout.exponential(1.0, 2 ** (1 / 8), 8 * 17 + 1)
# TBT: 0.125 ms .. 2**12 ms ≈ 4.1 s (121 bins): decode steps are ~5-200 ms; 2 s is already a stall.
TBT_LAYOUT = HistogramLayout.exponential(0.125, 2 ** (1 / 8), 8 * 15 + 1)
# End to end: 1 ms .. 2**20 ms ≈ 17 min (161 bins).
E2E_LAYOUT = HistogramLayout.exponential(1.0, 2 ** (1 / 8), 8 * 20 + 1)
# Token lengths: 1 .. 2**18 = 262,144 tokens (145 bins): room above today's 128k contexts.
TOKENS_LAYOUT = HistogramLayout.exponential(1.0, 2 ** (1 / 8), 8 * 18 + 1)

HISTOGRAMS: Mapping[str, HistogramLayout] = {
    TTFT_MS: TTFT_LAYOUT,
    TBT_MS: TBT_LAYOUT,
    E2E_MS: E2E_LAYOUT,
    INPUT_TOKENS: TOKENS_LAYOUT,
    OUTPUT_TOKENS: TOKENS_LAYOUT,
}


def store_settings(**overrides: Any) -> StoreSettings:
    """``StoreSettings`` with this module's histogram layouts; the counter store of every service
    process should be built with it (``make_counter_store(url, settings=store_settings())``)."""
    return dataclasses.replace(StoreSettings(histograms=dict(HISTOGRAMS)), **overrides)


def layouts_match(settings: StoreSettings) -> bool:
    """True when ``settings`` bins these histograms as this module does."""
    return all(settings.layout_for(name) == layout for name, layout in HISTOGRAMS.items())


# --- keys ----------------------------------------------------------------------------------------------
ALL_POOLS: tuple[PoolKey, ...] = tuple(PoolKey(s.value, o.value) for s in Stage for o in OperatorKind)


@functools.lru_cache(maxsize=65_536)
def deployment_key(deployment: str, name: str) -> SeriesKey:
    """Cached: building a ``SeriesKey`` validates it (~3 µs), and the hot path needs the same few."""
    return SeriesKey(deployment, name)


@functools.lru_cache(maxsize=65_536)
def pool_key(deployment: str, name: str, pool: PoolKey) -> SeriesKey:
    # str(): a pool built from the enums (the scraper does) labels like one read from the wire.
    return SeriesKey(deployment, name, (("operator", str(pool.operator)), ("stage", str(pool.stage))))
