"""The Python half of the server-side window read (``counters.redis_read``): the arguments it sends and
the reply it parses, without Redis. The Lua half is checked against the twin in the contract suite."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opscale.counters import HistogramLayout, Kind, ReadQuery, SeriesKey, StoreSettings
from opscale.counters.redis_read import parse_reply, read_args
from opscale.counters.window import Aggregate, _bin_ranges, accumulate, plan

SETTINGS = StoreSettings(histograms={"ttft_ms": HistogramLayout((10.0, 20.0, 50.0))})
NOW_MS = 1_700_000_010_500


def test_read_args_pack_every_query_in_one_argument() -> None:
    qs = [
        ReadQuery(SeriesKey.of("d1", "ttft_ms", stage="prefill"), Kind.HISTOGRAM, 10),
        ReadQuery(SeriesKey.of("d1", "arrivals"), Kind.COUNTER, 3),
    ]
    args = read_args(plan(qs, SETTINGS, NOW_MS), SETTINGS, "p:")
    # Window end = floor(now) = ...010000 ms; 10 s back is ...000000, 3 s back ...007000. The overflow
    # bin of ttft_ms is index 3 (three bounds); arrivals uses the 144-bound default layout.
    assert args == [
        "p:",
        1000,
        "h:d1:ttft_ms:stage=prefill 1700000000000 10 3\nc:d1:arrivals: 1700000007000 3 144",
    ]


def test_parse_reply_fields_absent_fields_and_bins() -> None:
    reply = b"5 12.5 1.5 9.0 - - 1700000009.25 0 2 3 3\n0 0 - - - - -\n2 4 -0.0 4.0 4.0 1700000001.5 -"
    hist, empty, gauge = parse_reply(reply)
    assert hist == (Aggregate(12.5, 5, 1.5, 9.0, None, None, {0: 2, 3: 3}), 1700000009.25)
    assert empty == (Aggregate(), None)
    assert gauge is not None and gauge[0].last == 4.0 and gauge[0].last_at == 1700000001.5
    assert math.copysign(1.0, gauge[0].lo) == -1.0  # the stored string is parsed, sign of zero kept


def test_parse_reply_marks_counts_to_re_read_and_takes_str() -> None:
    # A client made with decode_responses=True hands back str; -1: the count is past 2**53.
    assert parse_reply("-1 3 - - - - -\n1 1 - - - - 100.0") == [None, (Aggregate(1.0, 1), 100.0)]


@given(st.lists(st.floats(0, 1e18, allow_nan=False), min_size=1, max_size=20))
def test_a_reply_formatted_as_the_script_does_round_trips_the_sum(values: list[float]) -> None:
    a = accumulate([{"s": v, "n": 1} for v in values], overflow=3)
    ((got, _),) = [x for x in parse_reply(f"{a.count} {a.sum:.17g} - - - - -") if x is not None]
    assert got.sum == a.sum  # %.17g, the script's format, round-trips a double


@pytest.mark.parametrize("layout", [SETTINGS.layout_for("ttft_ms"), SETTINGS.default_histogram])
def test_cached_bin_ranges_are_the_layouts(layout: HistogramLayout) -> None:
    assert _bin_ranges(layout) == tuple(layout.bin_range(i) for i in range(len(layout.bounds) + 1))
    assert _bin_ranges(layout) is _bin_ranges(layout)
