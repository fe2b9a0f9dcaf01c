"""Validate a whole ``WriteBatch`` and fold it into per-key field operations.

Both twins apply the ``PreparedBatch`` this returns, op by op, with the same semantics (see ``Op``), so
they store the same numbers. Validation runs over every write before anything is returned: a batch with
one bad write raises before either twin touches its storage.

Pre-aggregation: many writes to one series and bucket become one increment per field; the sum of a
bucket's values is added up here in write order, then added to the stored sum once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from opscale.counters.base import (
    CounterWrite,
    GaugeWrite,
    HistogramWrite,
    Kind,
    SeriesKey,
    StoreSettings,
    Write,
    WriteBatch,
)
from opscale.counters.layout import bucket_key, meta_key, series_id, to_ms
from opscale.errors import InvalidArgument, ResourceExhausted

# Keeps every bucket sum far from float overflow and inside what a human would call a measurement.
MAX_ABS_VALUE = 1e18
MAX_COUNT = 2**31

# Op codes (also the Lua script's):
ADD_FLOAT = "f"  # field += value, in IEEE double (the twin in Python, Redis in Lua: same result)
ADD_INT = "i"  # field += value, integer (HINCRBY)
KEEP_MIN = "<"  # field = value if field is unset or value < field
KEEP_MAX = ">"  # field = value if field is unset or value > field
KEEP_NEWEST = "L"  # field = value and t = at_s if t is unset or at_s >= t (a tie: the later write wins)

KIND_OF: Mapping[type, Kind] = {
    CounterWrite: Kind.COUNTER,
    GaugeWrite: Kind.GAUGE,
    HistogramWrite: Kind.HISTOGRAM,
}


@dataclass(frozen=True, slots=True)
class Op:
    code: str
    field: str
    value: float | int
    at_s: float = 0.0  # KEEP_NEWEST only


@dataclass(frozen=True, slots=True)
class KeyOps:
    """Ops for one key, then: make the key live at least ``ttl_ms`` past ``now`` (never shorten)."""

    key: str
    ttl_ms: int
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    now_ms: int
    key_ops: tuple[KeyOps, ...]


@dataclass(slots=True)
class _Acc:
    """One series+bucket's share of the batch."""

    kind: Kind
    sum: float = 0.0
    count: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    last: float = 0.0
    last_at: float = -math.inf
    bins: dict[int, int] = field(default_factory=dict)


def _number(value: object, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{where}: {what} must be a finite number, got {value!r}", field=where)
    if abs(value) > MAX_ABS_VALUE:
        raise InvalidArgument(
            f"{where}: {what} must be within ±{MAX_ABS_VALUE:g}, got {value!r}", field=where
        )
    return float(value)


def _check(i: int, w: object, settings: StoreSettings, now_ms: int) -> tuple[Kind, float, float, int]:
    """(kind, at_s, value, count) of a valid write; raises naming ``writes[i].<field>``."""
    kind = KIND_OF.get(type(w))
    if kind is None or not isinstance(w, CounterWrite | GaugeWrite | HistogramWrite):
        raise InvalidArgument(f"writes[{i}] is a {type(w).__name__}, not a write", field=f"writes[{i}]")
    if not isinstance(w.key, SeriesKey):
        raise InvalidArgument(f"writes[{i}].key must be a SeriesKey", field=f"writes[{i}].key")
    at_s = _number(w.at_s, f"writes[{i}].at_s", "at_s")
    at_ms = to_ms(at_s)
    start_ms = at_ms - at_ms % settings.bucket_ms
    if start_ms + settings.bucket_ms + settings.retention_ms <= now_ms:
        raise InvalidArgument(
            f"writes[{i}].at_s={at_s!r} falls in a bucket already past retention "
            f"(retention_s={settings.retention_s:g} before now_s={now_ms / 1000:g})",
            field=f"writes[{i}].at_s",
        )
    if at_ms > now_ms + settings.max_future_ms:
        raise InvalidArgument(
            f"writes[{i}].at_s={at_s!r} is more than max_future_s={settings.max_future_s:g} ahead of now_s",
            field=f"writes[{i}].at_s",
        )
    count = 1
    if isinstance(w, CounterWrite):
        value = _number(w.delta, f"writes[{i}].delta", "delta")
        if value < 0:
            raise InvalidArgument(
                f"writes[{i}].delta must be >= 0, got {value!r}", field=f"writes[{i}].delta"
            )
    elif isinstance(w, GaugeWrite):
        value = _number(w.value, f"writes[{i}].value", "value")
    else:
        value = _number(w.value, f"writes[{i}].value", "value")
        if value < 0:
            raise InvalidArgument(
                f"writes[{i}].value must be >= 0, got {value!r}", field=f"writes[{i}].value"
            )
        count = w.count
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise InvalidArgument(
                f"writes[{i}].count must be an integer in [1, {MAX_COUNT}], got {count!r}",
                field=f"writes[{i}].count",
            )
    return kind, at_s, value, count


def prepare(batch: WriteBatch, settings: StoreSettings, now_ms: int) -> PreparedBatch:
    writes: tuple[Write, ...] = batch.writes if isinstance(batch, WriteBatch) else ()
    if not isinstance(batch, WriteBatch) or not isinstance(writes, tuple):
        raise InvalidArgument("batch must be a WriteBatch holding a tuple of writes", field="batch")
    if len(writes) > settings.max_batch_writes:
        raise ResourceExhausted(
            f"a batch holds at most {settings.max_batch_writes} writes, got {len(writes)}", field="writes"
        )
    buckets: dict[tuple[str, int], _Acc] = {}
    newest: dict[str, float] = {}  # series id -> newest at_s in this batch
    for i, w in enumerate(writes):
        kind, at_s, value, count = _check(i, w, settings, now_ms)
        sid = series_id(kind, w.key)
        at_ms = to_ms(at_s)
        acc = buckets.setdefault((sid, at_ms - at_ms % settings.bucket_ms), _Acc(kind))
        acc.count += count
        acc.sum += value * count
        acc.lo, acc.hi = min(acc.lo, value), max(acc.hi, value)
        if at_s >= acc.last_at:
            acc.last, acc.last_at = value, at_s
        if kind is Kind.HISTOGRAM:
            b = settings.layout_for(w.key.name).bin_of(value)
            acc.bins[b] = acc.bins.get(b, 0) + count
        newest[sid] = max(newest.get(sid, -math.inf), at_s)

    out: list[KeyOps] = []
    for (sid, start_ms), acc in buckets.items():
        ops = [Op(ADD_FLOAT, "s", acc.sum), Op(ADD_INT, "n", acc.count)]
        if acc.kind is not Kind.COUNTER:
            ops += [Op(KEEP_MIN, "lo", acc.lo), Op(KEEP_MAX, "hi", acc.hi)]
        if acc.kind is Kind.GAUGE:
            ops.append(Op(KEEP_NEWEST, "l", acc.last, acc.last_at))
        ops += [Op(ADD_INT, f"b{b}", c) for b, c in sorted(acc.bins.items())]
        # Lives until the bucket's end + retention, the instant reads stop being able to see it.
        ttl = start_ms + settings.bucket_ms + settings.retention_ms - now_ms
        out.append(KeyOps(bucket_key(sid, start_ms), ttl, tuple(ops)))
    for sid, at_s in newest.items():
        ttl = to_ms(at_s) + settings.retention_ms - now_ms
        if ttl > 0:  # a sample already older than retention cannot make the series fresh
            out.append(KeyOps(meta_key(sid), ttl, (Op(KEEP_MAX, "t", at_s),)))
    return PreparedBatch(now_ms, tuple(out))
