"""Which buckets a read covers, and how stored bucket fields fold into a ``WindowRead``.

Shared by both twins, so the arithmetic (and its float rounding) is the same code on both: buckets are
folded oldest first. Folding is two steps: ``accumulate`` (bucket fields -> ``Aggregate``) and
``finish`` (``Aggregate`` -> ``WindowRead``). Redis runs the first step server-side in Lua
(``redis_read``), bucket by bucket in the same order and with the same comparisons, and hands back only
the ``Aggregate``; the twin runs both here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opscale.counters.base import (
    HistogramBin,
    HistogramLayout,
    Kind,
    ReadQuery,
    SeriesKey,
    StoreSettings,
    WindowRead,
)
from opscale.counters.layout import bucket_key, meta_key, series_id, to_ms
from opscale.errors import InvalidArgument

Fields = Mapping[str, float | int]


@dataclass(frozen=True, slots=True)
class WindowPlan:
    query: ReadQuery
    start_ms: int
    end_ms: int
    sid: str  # layout.series_id of the query
    bucket_ms: int

    @property
    def n_buckets(self) -> int:
        return (self.end_ms - self.start_ms) // self.bucket_ms

    @property
    def bucket_keys(self) -> tuple[str, ...]:
        """Oldest first. Built on demand: the Redis read builds them in Lua instead."""
        return tuple(bucket_key(self.sid, t) for t in range(self.start_ms, self.end_ms, self.bucket_ms))

    @property
    def meta_key(self) -> str:
        return meta_key(self.sid)


@dataclass(slots=True)
class Aggregate:
    """A window's buckets folded together, before staleness and bins are dressed up. ``lo``/``hi`` stay
    at +/-inf and ``last_at`` at None while no bucket had the field."""

    sum: float = 0.0
    count: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    last: float | None = None
    last_at: float | None = None
    bins: dict[int, int] = field(default_factory=dict)  # index (clamped to the overflow bin) -> count


def plan(queries: Sequence[ReadQuery], settings: StoreSettings, now_ms: int) -> list[WindowPlan]:
    plans = []
    for i, q in enumerate(queries):
        where = f"queries[{i}]"
        if not isinstance(q, ReadQuery) or not isinstance(q.key, SeriesKey) or not isinstance(q.kind, Kind):
            raise InvalidArgument(f"{where} must be a ReadQuery of a SeriesKey and a Kind", field=where)
        w = q.window_s
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise InvalidArgument(
                f"{where}.window_s must be a finite number, got {w!r}", field=f"{where}.window_s"
            )
        window_ms = round(w * 1000)
        if (
            abs(window_ms - w * 1000) > 1e-6
            or window_ms <= 0
            or window_ms % settings.bucket_ms
            or window_ms > settings.retention_ms
        ):
            raise InvalidArgument(
                f"{where}.window_s must be a positive multiple of bucket_s={settings.bucket_s:g} "
                f"and at most retention_s={settings.retention_s:g}, got {w!r}",
                field=f"{where}.window_s",
            )
        end_ms = now_ms - now_ms % settings.bucket_ms  # the open bucket starts here and is left out
        start_ms = end_ms - window_ms
        plans.append(WindowPlan(q, start_ms, end_ms, series_id(q.kind, q.key), settings.bucket_ms))
    return plans


def overflow_bin(p: WindowPlan, settings: StoreSettings) -> int:
    """A stored bin index past the layout (it shrank) counts in the overflow bin, this one."""
    return len(settings.layout_for(p.query.key.name).bounds)


def accumulate(buckets: Sequence[Fields], overflow: int) -> Aggregate:
    """``buckets`` oldest first (empty mapping: never written). ``redis_read.READ_LUA`` mirrors this
    loop (same bucket order, same additions, same comparisons); change both or neither."""
    a = Aggregate()
    for f in buckets:
        if not f:
            continue
        a.sum += float(f.get("s", 0.0))
        a.count += int(f.get("n", 0))
        a.lo = min(a.lo, float(f.get("lo", math.inf)))
        a.hi = max(a.hi, float(f.get("hi", -math.inf)))
        if "t" in f and (a.last_at is None or float(f["t"]) >= a.last_at):
            a.last, a.last_at = float(f["l"]), float(f["t"])
        for name, c in f.items():
            if name[0] == "b":
                i = min(int(name[1:]), overflow)
                a.bins[i] = a.bins.get(i, 0) + int(c)
    return a


def fold(
    p: WindowPlan,
    settings: StoreSettings,
    now_s: float,
    buckets: Sequence[Fields],
    newest_at_s: float | None,
) -> WindowRead:
    """``buckets``: the stored fields of ``p.bucket_keys`` in order (empty mapping: never written).
    ``newest_at_s``: the meta ``t`` field, if the meta key exists."""
    return finish(p, settings, now_s, accumulate(buckets, overflow_bin(p, settings)), newest_at_s)


# id(layout) -> (layout, bin_range of every index): finish dresses up ~100 bins per histogram read, and
# bin_range per bin was a visible share of a read's client CPU. The layout is kept in the entry so its
# id cannot be reused while cached; layouts are few and live as long as the settings.
_RANGES: dict[int, tuple[HistogramLayout, tuple[tuple[float, float], ...]]] = {}


def _bin_ranges(layout: HistogramLayout) -> tuple[tuple[float, float], ...]:
    hit = _RANGES.get(id(layout))
    if hit is None or hit[0] is not layout:
        if len(_RANGES) > 1024:  # settings rebuilt again and again (tests): start over
            _RANGES.clear()
        hit = (layout, tuple(layout.bin_range(i) for i in range(len(layout.bounds) + 1)))
        _RANGES[id(layout)] = hit
    return hit[1]


def finish(
    p: WindowPlan, settings: StoreSettings, now_s: float, a: Aggregate, newest_at_s: float | None
) -> WindowRead:
    """Every bucket in the plan is still within retention (``window_s <= retention_s`` and the newest
    planned bucket ended at or before now), so only the meta needs a logical expiry check here.
    """
    kind = p.query.kind
    ranges = _bin_ranges(settings.layout_for(p.query.key.name))
    stale: float | None = None
    if newest_at_s is not None and to_ms(newest_at_s) + settings.retention_ms > to_ms(now_s):
        stale = max(0.0, now_s - newest_at_s)
    else:
        newest_at_s = None
    has_range = kind is not Kind.COUNTER and a.count > 0
    return WindowRead(
        key=p.query.key,
        kind=kind,
        start_s=p.start_ms / 1000,
        end_s=p.end_ms / 1000,
        count=a.count,
        sum=a.sum,
        min_value=a.lo if has_range else None,
        max_value=a.hi if has_range else None,
        last_value=a.last,
        last_at_s=a.last_at,
        bins=tuple(HistogramBin(*ranges[i], count=c) for i, c in sorted(a.bins.items()) if c > 0),
        last_write_s=newest_at_s,
        staleness_s=stale,
    )
