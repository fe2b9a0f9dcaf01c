"""Validated samples -> counter-store writes, pre-aggregated per batch.

The store folds each write on its own (~3.5 µs each), so a batch is first reduced here to about one
write per series and bucket:

- counters: one write per (series, bucket) carrying the summed delta, stamped with the newest sample
  time in it (the store's staleness is "newest time written");
- histograms: per (series, bucket, bin) at most three writes that keep everything a window read
  uses exactly — the count, the bin counts, the min and the max (quantiles narrow the outer bins to
  them) — and the sum up to float rounding: the smallest value (count 1), the largest (count 1), and
  the other ``n - 2`` observations as their mean (which lies between the two, hence in the same bin).

Throughput samples describe the ``interval_s`` before their timestamp; their tokens are spread over
the buckets that interval covers, in proportion, so a 10 s interval does not read as a 10x spike in
one second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from opscale.counters import CounterWrite, HistogramWrite, SeriesKey, StoreSettings, Write, WriteBatch
from opscale.counters.layout import to_ms
from opscale.signals import series as S
from opscale.signals.samples import (
    Arrival,
    GpuTelemetry,
    Latency,
    OperatorBusy,
    QueueState,
    Sample,
    Throughput,
)


@dataclass(slots=True)
class _Hist:
    n: int = 0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    at_s: float = -math.inf
    # The first observations as given, while there are at most three: written as they are, since
    # folding so few would not save a write.
    few: list[tuple[float, int]] | None = field(default_factory=list)


class _Folder:
    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.bucket_ms = settings.bucket_ms
        self.counters: dict[tuple[SeriesKey, int], list[float]] = {}  # -> [delta, newest at_s]
        self.hists: dict[tuple[SeriesKey, int, int], _Hist] = {}

    def add(self, key: SeriesKey, at_s: float, delta: float) -> None:
        slot = (key, to_ms(at_s) // self.bucket_ms)
        acc = self.counters.get(slot)
        if acc is None:
            self.counters[slot] = [delta, at_s]
        else:
            acc[0] += delta
            if at_s > acc[1]:
                acc[1] = at_s

    def observe(self, key: SeriesKey, at_s: float, value: float, count: int) -> None:
        b = self.settings.layout_for(key.name).bin_of(value)
        slot = (key, to_ms(at_s) // self.bucket_ms, b)
        h = self.hists.get(slot)
        if h is None:
            h = self.hists[slot] = _Hist()
        if h.few is not None:
            if len(h.few) < 3:
                h.few.append((value, count))
            else:
                h.few = None
        h.n += count
        h.total += value * count
        h.lo = min(h.lo, value)
        h.hi = max(h.hi, value)
        h.at_s = max(h.at_s, at_s)

    def spread(self, key: SeriesKey, at_s: float, interval_s: float, amount: float) -> None:
        """``amount`` accrued evenly over ``[at_s - interval_s, at_s]``: each bucket gets its share."""
        end_ms, start_ms = to_ms(at_s), to_ms(at_s - interval_s)
        first = start_ms // self.bucket_ms
        last = end_ms // self.bucket_ms
        if first == last or end_ms == start_ms:
            self.add(key, at_s, amount)
            return
        span = end_ms - start_ms
        for b in range(first, last + 1):
            lo = max(start_ms, b * self.bucket_ms)
            hi = min(end_ms, (b + 1) * self.bucket_ms)
            if hi > lo or b == last:
                # Earlier buckets are stamped at their start; the last at the sample's own time.
                self.add(key, at_s if b == last else lo / 1000, amount * (hi - lo) / span)

    def writes(self) -> Iterable[Write]:
        for (key, _), (delta, at_s) in self.counters.items():
            yield CounterWrite(key, at_s, delta)
        for (key, _, _), h in self.hists.items():
            if h.lo == h.hi:
                yield HistogramWrite(key, h.at_s, h.lo, h.n)
                continue
            if h.few is not None:
                yield from (HistogramWrite(key, h.at_s, v, c) for v, c in h.few)
                continue
            yield HistogramWrite(key, h.at_s, h.lo, 1)
            yield HistogramWrite(key, h.at_s, h.hi, 1)
            if h.n > 2:
                rest = (h.total - h.lo - h.hi) / (h.n - 2)
                yield HistogramWrite(key, h.at_s, min(max(rest, h.lo), h.hi), h.n - 2)


def samples_to_writes(samples: Iterable[Sample], settings: StoreSettings) -> WriteBatch:
    """The writes for already validated ``samples`` (``validate.validate_samples``), binned with the
    store's ``settings`` so the aggregation agrees with the store's bins."""
    f = _Folder(settings)
    dk, pk = S.deployment_key, S.pool_key
    for s in samples:
        p, d, at = s.payload, s.deployment, s.at_s
        if isinstance(p, Latency):
            f.observe(dk(d, p.kind.value), at, float(p.ms), p.count)
        elif isinstance(p, Arrival):
            f.observe(dk(d, S.INPUT_TOKENS), at, float(p.input_tokens), p.count)
            f.observe(dk(d, S.OUTPUT_TOKENS), at, float(p.output_tokens), p.count)
            f.add(dk(d, S.CACHED_INPUT_TOKENS), at, float(p.cached_input_tokens * p.count))
        elif isinstance(p, GpuTelemetry):  # deployment-wide even when the sample names a pool
            f.add(dk(d, S.GPU_SAMPLES), at, 1.0)
            f.add(dk(d, S.GPU_UTILIZATION_SUM), at, float(p.utilization_fraction))
            f.add(dk(d, S.GPU_POWER_WATTS_SUM), at, float(p.power_watts))
        elif s.pool is None:
            continue  # queue, throughput and busy need a pool; validation has refused these
        elif isinstance(p, QueueState):
            pool = s.pool
            f.add(pk(d, S.QUEUE_SAMPLES, pool), at, 1.0)
            f.add(pk(d, S.QUEUE_WAITING_SUM, pool), at, float(p.waiting_requests))
            f.add(pk(d, S.QUEUE_RUNNING_SUM, pool), at, float(p.running_requests))
            f.add(pk(d, S.KV_CACHE_USAGE_SUM, pool), at, float(p.kv_cache_usage_fraction))
        elif isinstance(p, Throughput):
            pool, iv = s.pool, p.interval_s
            decode, prefill = p.decode_tokens_per_s * iv, p.prefill_tokens_per_s * iv
            f.spread(pk(d, S.DECODE_TOKENS, pool), at, iv, decode)
            f.spread(pk(d, S.PREFILL_TOKENS, pool), at, iv, prefill)
            f.spread(dk(d, S.DECODE_TOKENS), at, iv, decode)
            f.spread(dk(d, S.PREFILL_TOKENS), at, iv, prefill)
        elif isinstance(p, OperatorBusy):
            pool = s.pool
            f.add(pk(d, S.BUSY_SAMPLES, pool), at, 1.0)
            f.add(pk(d, S.BUSY_S, pool), at, float(p.busy_s))
            f.add(pk(d, S.BUSY_INTERVAL_S, pool), at, float(p.interval_s))
            f.add(pk(d, S.BATCH_SIZE_SUM, pool), at, float(p.batch_size))
    return WriteBatch(tuple(f.writes()))
