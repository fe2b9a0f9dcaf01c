"""Validated samples -> counter-store writes, pre-aggregated per batch.

The store folds each write on its own (~3.5 µs each), so a batch is first reduced here to about one
write per series and bucket:

- counters: one write per (series, bucket) carrying the summed delta, stamped with the newest sample
  time in it (the store's staleness is "newest time written");
- histograms: per (series, bucket) the smallest and the largest value (count 1 each) and, per
  non-empty bin, the bin's other observations as their mean (count n): one write per distinct bin
  plus two, never more than the observations. That keeps everything a window read uses exactly — the
  count, the bin counts, the min and the max (quantiles narrow the outer bins to them) — and the sum
  up to float rounding.

Throughput samples describe the ``interval_s`` before their timestamp; their tokens are spread over
the buckets that interval covers, in proportion, so a 10 s interval does not read as a 10x spike in
one second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opscale.counters import CounterWrite, HistogramWrite, SeriesKey, StoreSettings, Write, WriteBatch
from opscale.counters.layout import to_ms
from opscale.pools import PoolKey
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

# (deployment, series name, pool or None, bucket index): the series-bucket a value lands in. Plain
# tuples rather than SeriesKeys: they hash faster, and keys are built once per series at the end.
_Slot = tuple[str, str, PoolKey | None, int]


class _Folder:
    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.bucket_ms = settings.bucket_ms
        self.counters: dict[_Slot, list[float]] = {}  # -> [delta, newest at_s]
        # -> {bin: [count, sum, smallest, largest]}, and the newest at_s per slot
        self.hists: dict[_Slot, dict[int, list[float]]] = {}
        self.hist_at: dict[_Slot, float] = {}
        # The first few observations of a slot as given: written as they are when folding would not
        # make fewer writes (a handful of values spread over bins).
        self.raw: dict[_Slot, list[tuple[float, int]] | None] = {}
        self._bin_of: dict[str, Callable[[float], int]] = {}

    def add(self, slot: _Slot, at_s: float, delta: float) -> None:
        acc = self.counters.get(slot)
        if acc is None:
            self.counters[slot] = [delta, at_s]
        else:
            acc[0] += delta
            if at_s > acc[1]:
                acc[1] = at_s

    def observe(self, slot: _Slot, at_s: float, value: float, count: int) -> None:
        bin_of = self._bin_of.get(slot[1])
        if bin_of is None:
            bin_of = self._bin_of[slot[1]] = self.settings.layout_for(slot[1]).bin_of
        bins = self.hists.get(slot)
        if bins is None:
            bins = self.hists[slot] = {}
            self.hist_at[slot] = at_s
            self.raw[slot] = [(value, count)]
        else:
            if at_s > self.hist_at[slot]:
                self.hist_at[slot] = at_s
            raw = self.raw[slot]
            if raw is not None:
                if len(raw) < _RAW_MAX:
                    raw.append((value, count))
                else:
                    self.raw[slot] = None
        b = bin_of(value)
        acc = bins.get(b)
        if acc is None:
            bins[b] = [count, value * count, value, value]
        else:
            acc[0] += count
            acc[1] += value * count
            if value < acc[2]:
                acc[2] = value
            elif value > acc[3]:
                acc[3] = value

    def spread(
        self, slot: tuple[str, str, PoolKey | None], at_s: float, interval_s: float, amount: float
    ) -> None:
        """``amount`` accrued evenly over ``[at_s - interval_s, at_s]``: each bucket gets its share."""
        end_ms, start_ms = to_ms(at_s), to_ms(at_s - interval_s)
        first = start_ms // self.bucket_ms
        last = end_ms // self.bucket_ms
        if first == last or end_ms == start_ms:
            self.add((*slot, last), at_s, amount)
            return
        span = end_ms - start_ms
        for b in range(first, last + 1):
            lo = max(start_ms, b * self.bucket_ms)
            hi = min(end_ms, (b + 1) * self.bucket_ms)
            if hi > lo or b == last:
                # Earlier buckets are stamped at their start; the last at the sample's own time.
                self.add((*slot, b), at_s if b == last else lo / 1000, amount * (hi - lo) / span)

    @staticmethod
    def _key(slot: _Slot) -> SeriesKey:
        d, name, pool, _ = slot
        return S.deployment_key(d, name) if pool is None else S.pool_key(d, name, pool)

    def writes(self) -> Iterable[Write]:
        for slot, (delta, at_s) in self.counters.items():
            yield CounterWrite(self._key(slot), at_s, delta)
        for slot, bins in self.hists.items():
            key, at_s = self._key(slot), self.hist_at[slot]
            folded = _fold_histogram(bins)
            raw = self.raw[slot]
            chosen = raw if raw is not None and len(raw) <= len(folded) else folded
            yield from (HistogramWrite(key, at_s, v, c) for v, c in chosen)


_RAW_MAX = 4


def _fold_histogram(bins: dict[int, list[float]]) -> list[tuple[float, int]]:
    """(value, count) pairs, at most ``2 + len(bins)``: the series-bucket's smallest and largest value,
    then per bin its other observations as their mean (which lies between that bin's own smallest and
    largest, hence in the bin); a mean equal to an extreme joins the extreme's count."""
    lo_bin, hi_bin = min(bins), max(bins)
    smallest, largest = bins[lo_bin][2], bins[hi_bin][3]
    if smallest == largest:
        return [(smallest, int(bins[lo_bin][0]))]
    extremes = {smallest: 1, largest: 1}
    out: list[tuple[float, int]] = []
    for b, (n, total, lo, hi) in bins.items():
        rest = int(n) - (b == lo_bin) - (b == hi_bin)
        if rest > 0:
            taken = (smallest if b == lo_bin else 0.0) + (largest if b == hi_bin else 0.0)
            mean = min(max((total - taken) / rest, lo), hi)
            if mean in extremes:
                extremes[mean] += rest
            else:
                out.append((mean, rest))
    return [*extremes.items(), *out]


def samples_to_writes(samples: Iterable[Sample], settings: StoreSettings) -> WriteBatch:
    """The writes for already validated ``samples`` (``validate.validate_samples``), binned with the
    store's ``settings`` so the aggregation agrees with the store's bins."""
    f = _Folder(settings)
    add, observe, bucket_ms = f.add, f.observe, f.bucket_ms
    for s in samples:
        p, d, at = s.payload, s.deployment, s.at_s
        b = to_ms(at) // bucket_ms
        if isinstance(p, Latency):
            observe((d, p.kind.value, None, b), at, float(p.ms), p.count)
        elif isinstance(p, Arrival):
            observe((d, S.INPUT_TOKENS, None, b), at, float(p.input_tokens), p.count)
            observe((d, S.OUTPUT_TOKENS, None, b), at, float(p.output_tokens), p.count)
            add((d, S.CACHED_INPUT_TOKENS, None, b), at, float(p.cached_input_tokens * p.count))
        elif isinstance(p, GpuTelemetry):  # deployment-wide even when the sample names a pool
            add((d, S.GPU_SAMPLES, None, b), at, 1.0)
            add((d, S.GPU_UTILIZATION_SUM, None, b), at, float(p.utilization_fraction))
            add((d, S.GPU_POWER_WATTS_SUM, None, b), at, float(p.power_watts))
        elif s.pool is None:
            continue  # queue, throughput and busy need a pool; validation has refused these
        elif isinstance(p, QueueState):
            pool = s.pool
            add((d, S.QUEUE_SAMPLES, pool, b), at, 1.0)
            add((d, S.QUEUE_WAITING_SUM, pool, b), at, float(p.waiting_requests))
            add((d, S.QUEUE_RUNNING_SUM, pool, b), at, float(p.running_requests))
            add((d, S.KV_CACHE_USAGE_SUM, pool, b), at, float(p.kv_cache_usage_fraction))
        elif isinstance(p, Throughput):
            pool, iv = s.pool, p.interval_s
            decode, prefill = p.decode_tokens_per_s * iv, p.prefill_tokens_per_s * iv
            f.spread((d, S.DECODE_TOKENS, pool), at, iv, decode)
            f.spread((d, S.PREFILL_TOKENS, pool), at, iv, prefill)
            f.spread((d, S.DECODE_TOKENS, None), at, iv, decode)
            f.spread((d, S.PREFILL_TOKENS, None), at, iv, prefill)
        elif isinstance(p, OperatorBusy):
            pool = s.pool
            add((d, S.BUSY_SAMPLES, pool, b), at, 1.0)
            add((d, S.BUSY_S, pool, b), at, float(p.busy_s))
            add((d, S.BUSY_INTERVAL_S, pool, b), at, float(p.interval_s))
            add((d, S.BATCH_SIZE_SUM, pool, b), at, float(p.batch_size))
    return WriteBatch(tuple(f.writes()))
