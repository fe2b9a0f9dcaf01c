"""Pure parts of the counter store: value validation, histogram layouts, time base, batch folding."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opscale.counters import (
    CounterWrite,
    GaugeWrite,
    HistogramBin,
    HistogramLayout,
    HistogramWrite,
    InMemoryCounterStore,
    Kind,
    SeriesKey,
    StoreSettings,
    WindowRead,
    WriteBatch,
)
from opscale.counters.batch import prepare
from opscale.counters.layout import to_ms
from opscale.errors import ConfigError, InvalidArgument

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("d:1", "x", ()), "namespace"),
        (("d1", "ttft ms", ()), "name"),
        (("d1", "x{y}", ()), "name"),
        (("", "x", ()), "namespace"),
        (("d1", "x" * 129, ()), "name"),
        (("d1", "x", (("stage", "pre,fill"),)), "labels[0].value"),
        (("d1", "x", (("9stage", "prefill"),)), "labels[0].key"),
        (("d1", "x", (("a", "1"), ("a", "2"))), "labels"),
        (("d1", "x", tuple((f"k{i}", "v") for i in range(9))), "labels"),
    ],
)
def test_series_key_rejects_what_would_break_a_key(
    args: tuple[str, str, tuple[tuple[str, str], ...]], field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        SeriesKey(*args)
    assert err.value.field == field
    assert field in str(err.value) or "labels" in str(err.value)


def test_series_key_sorts_labels() -> None:
    assert SeriesKey("d", "n", (("b", "1"), ("a", "2"))) == SeriesKey.of("d", "n", a="2", b="1")
    assert SeriesKey.of("d", "n", b="1", a="2").labels == (("a", "2"), ("b", "1"))


def test_layout_bins_are_upper_inclusive() -> None:
    layout = HistogramLayout((10.0, 20.0))
    assert [layout.bin_of(v) for v in (0.0, 10.0, 10.0001, 20.0, 20.5)] == [0, 0, 1, 1, 2]
    assert [layout.bin_range(i) for i in range(3)] == [(0.0, 10.0), (10.0, 20.0), (20.0, math.inf)]


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (1.0, math.inf), (math.nan,)])
def test_layout_rejects_bad_bounds(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="bounds"):
        HistogramLayout(bounds)


def test_exponential_layout() -> None:
    layout = HistogramLayout.exponential(1.0, 2.0, 4)
    assert layout.bounds == (1.0, 2.0, 4.0, 8.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bucket_s": 0}, "bucket_s"),
        ({"bucket_s": 0.0005}, "bucket_s"),
        ({"retention_s": math.inf}, "retention_s"),
        ({"bucket_s": 10, "retention_s": 5}, "retention_s"),
        ({"dedupe_ttl_s": -1}, "dedupe_ttl_s"),
        ({"max_batch_writes": 0}, "max_batch_writes"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        StoreSettings(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_to_ms_ignores_float_noise() -> None:
    assert 2.01 * 1000 < 2010  # the noise this guards against
    assert to_ms(2.01) == 2010
    assert to_ms(T0 + 0.0005) == int(T0) * 1000  # half a millisecond rounds down, not up
    assert to_ms(-0.5) == -500


@given(st.integers(0, 4 * 10**12))  # up to the year 2096: microseconds still fit a double's 53 bits
def test_to_ms_is_exact_on_whole_milliseconds(ms: int) -> None:
    assert to_ms(ms / 1000) == ms


def test_prepare_folds_writes_into_one_op_per_field() -> None:
    key = SeriesKey.of("d1", "arrivals")
    batch = WriteBatch.of(*[CounterWrite(key, T0 + 100 + i / 10, 1.5) for i in range(10)])
    prepared = prepare(batch, StoreSettings(), to_ms(T0 + 101))
    bucket, meta = prepared.key_ops
    # Ten writes in bucket [100, 101): one sum (10 × 1.5) and one count, plus the series' newest at_s.
    assert [(op.field, op.value) for op in bucket.ops] == [("s", 15.0), ("n", 10)]
    assert bucket.key.startswith("b:c:d1:arrivals::") and meta.key == "m:c:d1:arrivals:"
    assert meta.ops[0].value == T0 + 100.9
    # The bucket lives until its end (101) + retention (3600 s); now is 101 -> 3600 s.
    assert bucket.ttl_ms == 3_600_000


def _read(bins: tuple[HistogramBin, ...], lo: float, hi: float) -> WindowRead:
    n = sum(b.count for b in bins)
    key = SeriesKey.of("d", "h")
    return WindowRead(key, Kind.HISTOGRAM, 0.0, 1.0, n, 0.0, lo, hi, None, None, bins, None, None)


def test_quantile_interpolates_inside_the_bin() -> None:
    r = _read((HistogramBin(0.0, 10.0, 2), HistogramBin(10.0, 20.0, 2)), lo=0.0, hi=20.0)
    # rank 0.75 * 4 = 3 -> second bin, 1 of its 2: 10 + 10 * 1/2 = 15.
    assert r.quantile(0.75) == 15.0
    with pytest.raises(InvalidArgument, match="q must be"):
        r.quantile(1.5)
    counter = WindowRead(
        SeriesKey.of("d", "c"), Kind.COUNTER, 0, 1, 0, 0, None, None, None, None, (), None, None
    )
    with pytest.raises(InvalidArgument, match="histogram"):
        counter.quantile(0.5)


async def test_memory_twin_frees_what_retention_expired() -> None:
    store = InMemoryCounterStore(StoreSettings(retention_s=10, dedupe_ttl_s=5))
    key = SeriesKey.of("d1", "x")
    batch = WriteBatch.of(CounterWrite(key, T0, 1), GaugeWrite(key, T0, 1), HistogramWrite(key, T0, 1))
    await store.apply(batch, batch_id="b", now_s=T0)
    assert len(store) == 7  # 3 buckets + 3 metas + 1 dedupe record
    await store.read(key, Kind.COUNTER, now_s=T0 + 5, window_s=1)
    assert len(store) == 6  # the dedupe record's 5 s are over
    await store.read(key, Kind.COUNTER, now_s=T0 + 11, window_s=1)
    assert len(store) == 0  # bucket [T0, T0+1) + 10 s retention
