"""Which buckets a read covers, and how stored bucket fields fold into a ``WindowRead``.

Shared by both twins, so the arithmetic (and its float rounding) is the same code on both: buckets are
folded oldest first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opscale.counters.base import HistogramBin, Kind, ReadQuery, SeriesKey, StoreSettings, WindowRead
from opscale.counters.layout import bucket_key, meta_key, series_id, to_ms
from opscale.errors import InvalidArgument

Fields = Mapping[str, float | int]


@dataclass(frozen=True, slots=True)
class WindowPlan:
    query: ReadQuery
    start_ms: int
    end_ms: int
    bucket_keys: tuple[str, ...]  # oldest first
    meta_key: str


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
        sid = series_id(q.kind, q.key)
        keys = tuple(bucket_key(sid, t) for t in range(start_ms, end_ms, settings.bucket_ms))
        plans.append(WindowPlan(q, start_ms, end_ms, keys, meta_key(sid)))
    return plans


def fold(
    p: WindowPlan,
    settings: StoreSettings,
    now_s: float,
    buckets: Sequence[Fields],
    newest_at_s: float | None,
) -> WindowRead:
    """``buckets``: the stored fields of ``p.bucket_keys`` in order (empty mapping: never written).
    ``newest_at_s``: the meta ``t`` field, if the meta key exists.

    Every bucket in the plan is still within retention (``window_s <= retention_s`` and the newest
    planned bucket ended at or before now), so only the meta needs a logical expiry check here.
    """
    kind = p.query.kind
    total, count = 0.0, 0
    lo, hi = math.inf, -math.inf
    last: float | None = None
    last_at: float | None = None
    bins: dict[int, int] = {}
    layout = settings.layout_for(p.query.key.name)
    overflow = len(layout.bounds)  # a bin index past the layout (it shrank) counts as overflow
    for f in buckets:
        if not f:
            continue
        total += float(f.get("s", 0.0))
        count += int(f.get("n", 0))
        lo = min(lo, float(f.get("lo", math.inf)))
        hi = max(hi, float(f.get("hi", -math.inf)))
        if "t" in f and (last_at is None or float(f["t"]) >= last_at):
            last, last_at = float(f["l"]), float(f["t"])
        for name, c in f.items():
            if name[0] == "b":
                i = min(int(name[1:]), overflow)
                bins[i] = bins.get(i, 0) + int(c)

    stale: float | None = None
    if newest_at_s is not None and to_ms(newest_at_s) + settings.retention_ms > to_ms(now_s):
        stale = max(0.0, now_s - newest_at_s)
    else:
        newest_at_s = None
    has_range = kind is not Kind.COUNTER and count > 0
    return WindowRead(
        key=p.query.key,
        kind=kind,
        start_s=p.start_ms / 1000,
        end_s=p.end_ms / 1000,
        count=count,
        sum=total,
        min_value=lo if has_range else None,
        max_value=hi if has_range else None,
        last_value=last,
        last_at_s=last_at,
        bins=tuple(HistogramBin(*layout.bin_range(i), count=c) for i, c in sorted(bins.items()) if c > 0),
        last_write_s=newest_at_s,
        staleness_s=stale,
    )
