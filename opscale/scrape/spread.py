"""New observations of an engine histogram between two scrapes -> (value, count) runs for the store.

An engine histogram says how many observations fell in each bucket ``(lo, hi]`` and their exact sum;
not where inside a bucket they were. The runs written here keep everything it does say:

- **count**: exactly the new observations (per bucket, too).
- **mean**: exact, from ``_sum``. Inside each finite bucket the observations are spread uniformly
  over a sub-range ``[lo + t·w, hi]`` (t ≥ 0) or ``[lo, hi + t·w]`` (t < 0), w = hi − lo, with one
  ``t`` for the whole histogram chosen so that the runs add up to the new ``_sum`` (t = 0 is the
  whole bucket: Prometheus' ``histogram_quantile``). The overflow bucket ``(lo, +Inf)`` gets what
  the finite buckets leave of the sum, spread over ``[lo, 2m − lo]`` around that mean m, since
  nothing bounds it from above; if that leaves less than ``lo`` each, the overflow sits at ``lo``
  and the finite buckets shift down to keep the sum.
- **percentiles**: linear interpolation inside the bucket, as ``histogram_quantile``, over that
  sub-range. So a percentile is never outside the engine bucket that holds it (widened by one store
  bin, ≈9%, where a store bin straddles the bucket bound): as exact as the engine's buckets allow.

The uniform spread is written per *store* bin (``HistogramLayout``): the c observations of a range
[a, b] sit at a + (k + ½)(b − a)/c, k = 0..c−1, and each store bin gets the ones inside it, at their
mean. That is at most one run per store bin the range crosses, however large c is, and the sum is
kept exactly.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

from opscale.counters import HistogramLayout
from opscale.scrape.parse import HistogramValue

Run = tuple[float, int]  # (value, count)


@dataclass(frozen=True, slots=True)
class HistogramDelta:
    """New observations between two readings of one histogram: per-bucket (not cumulative) counts."""

    bounds: tuple[float, ...]  # upper bounds, ascending, inf last
    counts: tuple[int, ...]
    sum: float  # nan when the engine exports no _sum
    count: int

    def scaled(self, factor: float) -> tuple[int, ...]:
        """Per-bucket counts times ``factor``, rounded on the running total (so they add up to
        round(count × factor) and no end of the distribution is favoured, as largest-remainder
        rounding with ties would): the same distribution over a different number of requests."""
        out, cum, before = [], 0.0, 0
        for c in self.counts:
            cum += c * factor
            upto = math.floor(cum + 0.5)
            out.append(upto - before)
            before = upto
        return tuple(out)


def histogram_delta(
    prev: HistogramValue | None, cur: HistogramValue | None, reset: bool
) -> HistogramDelta | None:
    """None when there is nothing to compare (no current value, or no previous one / other bounds and
    no reset: the first reading of a histogram is a baseline)."""
    if cur is None:
        return None
    if not reset and (prev is None or prev.bounds != cur.bounds):
        return None
    base = None if reset or prev is None else prev
    counts: list[int] = []
    below = 0.0
    for i, (_, cum) in enumerate(cur.buckets):
        cum_delta = cum - (base.buckets[i][1] if base is not None else 0.0)
        counts.append(round(max(0.0, cum_delta - below)))
        below = max(below, cum_delta)
    total = cur.sum - (base.sum if base is not None else 0.0)
    return HistogramDelta(cur.bounds, tuple(counts), total, sum(counts))


def _uniform(a: float, b: float, c: int, layout: HistogramLayout) -> list[Run]:
    """c observations evenly spread over [a, b], one run per store bin they fall in."""
    if c <= 0:
        return []
    if b <= a:
        return [(a, c)]
    step = (b - a) / c

    def upto(x: float) -> int:  # observations <= x
        return min(c, max(0, math.floor((x - a) / step + 0.5)))

    bounds = layout.bounds
    edges = [a, *bounds[bisect.bisect_right(bounds, a) : bisect.bisect_left(bounds, b)], b]
    runs: list[Run] = []
    for lo, hi in itertools.pairwise(edges):
        k1, k2 = upto(lo), upto(hi)
        if k2 > k1:
            runs.append((a + step * (k1 + k2) / 2, k2 - k1))
    return runs


def spread(
    delta: HistogramDelta,
    layout: HistogramLayout,
    *,
    unit: float = 1.0,
    counts: tuple[int, ...] | None = None,
) -> list[Run]:
    """Runs for ``delta`` in the store's unit (``unit`` multiplies engine values, e.g. 1000 for s → ms).

    ``counts``: per-bucket counts to spread instead of the delta's own (``HistogramDelta.scaled``),
    with the placement the delta's own sum dictates.
    """
    use = counts if counts is not None else delta.counts
    lows = (0.0, *delta.bounds[:-1])
    finite = [
        (lo * unit, hi * unit, c, n)
        for lo, hi, c, n in zip(lows, delta.bounds, delta.counts, use, strict=True)
        if math.isfinite(hi) and (c or n)
    ]
    over_c, over_n = delta.counts[-1], use[-1]
    total = delta.sum * unit
    mids = sum(c * (lo + hi) / 2 for lo, hi, c, _ in finite)
    half_widths = sum(c * (hi - lo) / 2 for lo, hi, c, _ in finite)
    runs: list[Run] = []
    explain = total - mids  # what the finite buckets at their midpoints leave unexplained
    if over_c or over_n:
        lo = lows[-1] * unit
        mean = explain / over_c if over_c and math.isfinite(total) else lo
        if mean < lo:  # the overflow holds at least lo each: the finite buckets move down instead
            explain, mean = explain - over_c * lo, lo
        else:
            explain = 0.0
        runs += _uniform(lo, max(lo, 2 * mean - lo), over_n, layout)
    wanted = explain / half_widths if half_widths > 0 and math.isfinite(total) else 0.0
    shift = min(1.0, max(-1.0, wanted))
    for lo, hi, _, n in finite:
        w = hi - lo
        a, b = (lo + shift * w, hi) if shift >= 0 else (lo, hi + shift * w)
        runs += _uniform(a, b, n, layout)
    return runs
