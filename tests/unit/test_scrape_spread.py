"""Engine histogram deltas -> store runs: counts exact, sums exact, every run inside the part of its
engine bucket the sum allows, and percentiles within the bucket that holds them."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from opscale.counters import HistogramLayout
from opscale.scrape import HistogramDelta, HistogramValue, histogram_delta, spread
from opscale.signals import TOKENS_LAYOUT, TTFT_LAYOUT

BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, math.inf)  # a TTFT-like histogram, seconds


def cumulative(counts: list[int], total: float) -> HistogramValue:
    running, buckets = 0, []
    for le, c in zip(BOUNDS, counts, strict=True):
        running += c
        buckets.append((le, float(running)))
    return HistogramValue(tuple(buckets), total, float(running))


def test_delta_between_two_readings_is_per_bucket_counts_and_the_sum() -> None:
    prev = cumulative([1, 2, 0, 0, 0, 0], 0.9)
    cur = cumulative([1, 5, 3, 0, 0, 1], 5.4)
    d = histogram_delta(prev, cur, reset=False)
    assert d is not None
    assert (d.counts, d.count) == ((0, 3, 3, 0, 0, 1), 7)
    assert d.sum == 5.4 - 0.9
    assert histogram_delta(None, cur, reset=False) is None  # first reading: a baseline
    assert histogram_delta(None, cur, reset=True) == HistogramDelta(BOUNDS, (1, 5, 3, 0, 0, 1), 5.4, 10)


def test_midpoint_sum_spreads_over_whole_buckets() -> None:
    # 4 in (0.1, 0.25], sum at the midpoint: spread evenly over the whole bucket (histogram_quantile).
    d = HistogramDelta(BOUNDS, (0, 4, 0, 0, 0, 0), 4 * 0.175, 4)
    runs = spread(d, TTFT_LAYOUT, unit=1000.0)
    values = sorted(v for v, c in runs for _ in range(c))
    assert values == [118.75, 156.25, 193.75, 231.25]  # 100 + (k + 1/2) * 150 / 4 ms


def test_the_sum_moves_observations_inside_their_buckets() -> None:
    # 10 in (1, 2.5] with mean 1.15: the spread narrows to [1, 1.3] (t = -0.8).
    d = HistogramDelta(BOUNDS, (0, 0, 0, 0, 10, 0), 11.5, 10)
    runs = spread(d, TTFT_LAYOUT, unit=1000.0)
    assert sum(c for _, c in runs) == 10
    assert math.isclose(sum(v * c for v, c in runs), 11_500.0)
    assert all(1000.0 <= v <= 1300.0 for v, _ in runs)


def test_the_overflow_bucket_gets_the_rest_of_the_sum() -> None:
    d = HistogramDelta(BOUNDS, (0, 2, 0, 0, 0, 2), 2 * 0.175 + 2 * 4.0, 4)
    runs = spread(d, TTFT_LAYOUT, unit=1000.0)
    over = [(v, c) for v, c in runs if v > 2500.0]
    assert sum(c for _, c in over) == 2 and math.isclose(sum(v * c for v, c in over) / 2, 4000.0)


def test_scaled_counts_keep_the_distribution_over_another_total() -> None:
    d = HistogramDelta(BOUNDS, (3, 3, 3, 1, 0, 0), 3.0, 10)
    assert d.scaled(2.0) == (6, 6, 6, 2, 0, 0)
    assert sum(d.scaled(1.3)) == 13


@given(
    counts=st.lists(st.integers(0, 400), min_size=6, max_size=6).filter(lambda c: sum(c) > 0),
    where=st.lists(st.floats(0.0, 1.0, exclude_min=True), min_size=6, max_size=6),
)
def test_counts_and_sums_are_kept_and_runs_stay_in_their_buckets(
    counts: list[int], where: list[float]
) -> None:
    lows = (0.0, *BOUNDS[:-1])
    # A true sum: each bucket's observations at one point inside it (overflow: up to 3x its bound).
    total = sum(
        c * (lo + w * ((hi if math.isfinite(hi) else 3 * lo) - lo))
        for lo, hi, c, w in zip(lows, BOUNDS, counts, where, strict=True)
    )
    d = HistogramDelta(BOUNDS, tuple(counts), total, sum(counts))
    runs = spread(d, TOKENS_LAYOUT)
    assert sum(c for _, c in runs) == sum(counts)
    assert math.isclose(sum(v * c for v, c in runs), total, rel_tol=1e-9, abs_tol=1e-9)
    for v, _ in runs:
        assert v >= 0.0


@given(
    counts=st.lists(st.integers(0, 300), min_size=5, max_size=5).filter(lambda c: sum(c) > 0),
    q=st.floats(0.01, 0.99),
)
def test_a_percentile_lies_in_the_engine_bucket_that_holds_it(counts: list[int], q: float) -> None:
    # No overflow and a midpoint sum: the runs are the uniform spread; their q-quantile's bucket is the
    # bucket where the cumulative count first reaches q (histogram_quantile's rule).
    full = [*counts, 0]
    lows = (0.0, *BOUNDS[:-1])
    total = sum(c * (lo + hi) / 2 for lo, hi, c in zip(lows, BOUNDS[:-1], counts, strict=False))
    layout = HistogramLayout.exponential(0.001, 2 ** (1 / 8), 120)
    runs = sorted(spread(HistogramDelta(BOUNDS, tuple(full), total, sum(counts)), layout))
    rank = math.ceil(q * sum(counts))
    seen, value = 0, 0.0
    for v, c in runs:
        seen += c
        if seen >= rank:
            value = v
            break
    cum, bucket = 0, 0
    while cum + counts[bucket] < rank:
        cum += counts[bucket]
        bucket += 1
    assert lows[bucket] <= value <= BOUNDS[bucket]
