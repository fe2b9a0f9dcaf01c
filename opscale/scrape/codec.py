"""A target's scrape state — its last ``EngineReading`` and the ``Carry`` — to and from JSON: it is
kept in Redis, so that whichever ingest replica scrapes a target next derives its deltas from the
same baseline.

Floats round-trip exactly through ``json`` (``repr`` is shortest round-trip); ``inf`` bucket bounds
are written as the string ``"+Inf"`` (JSON has no infinity). A stored reading that does not decode
(another version's format) is reported as ``ValueError`` and treated by callers as no reading.
"""

from __future__ import annotations

import json
import math
from typing import Any

from opscale.scrape.delta import Carry
from opscale.scrape.engines import HISTOGRAM_FIELDS, Engine, EngineReading
from opscale.scrape.parse import HistogramValue

_VERSION = 2


def _hist_out(h: HistogramValue | None) -> Any:
    if h is None:
        return None
    bounds = ["+Inf" if math.isinf(le) else le for le, _ in h.buckets]
    return {
        "le": bounds,
        "c": [c for _, c in h.buckets],
        "sum": None if math.isnan(h.sum) else h.sum,
        "n": h.count,
    }


def _hist_in(raw: Any) -> HistogramValue | None:
    if raw is None:
        return None
    bounds = [math.inf if le == "+Inf" else float(le) for le in raw["le"]]
    buckets = tuple(zip(bounds, (float(c) for c in raw["c"]), strict=True))
    total = math.nan if raw["sum"] is None else float(raw["sum"])
    return HistogramValue(buckets, total, float(raw["n"]))


def state_to_json(r: EngineReading, carry: Carry) -> str:
    body: dict[str, Any] = {"v": _VERSION, "carry": [carry.lengths and list(carry.lengths), carry.pending]}
    for name in EngineReading.__dataclass_fields__:
        value = getattr(r, name)
        if name in HISTOGRAM_FIELDS:
            body[name] = _hist_out(value)
        elif name == "engine":
            body[name] = value.value
        elif name in ("kv_usage_by_engine", "created", "missing"):
            body[name] = [list(p) if isinstance(p, tuple) else p for p in value]
        else:
            body[name] = value
    return json.dumps(body, separators=(",", ":"))


def state_from_json(text: str | bytes) -> tuple[EngineReading, Carry]:
    try:
        raw = json.loads(text)
        if raw.get("v") != _VERSION:
            raise ValueError(f"stored reading has format {raw.get('v')!r}, expected {_VERSION}")
        fields: dict[str, Any] = {}
        for name in EngineReading.__dataclass_fields__:
            value = raw[name]
            if name in HISTOGRAM_FIELDS:
                fields[name] = _hist_in(value)
            elif name == "engine":
                fields[name] = Engine(value)
            elif name in ("kv_usage_by_engine", "created"):
                fields[name] = tuple((str(k), float(v)) for k, v in value)
            elif name == "missing":
                fields[name] = tuple(str(m) for m in value)
            else:
                fields[name] = value
        lengths, pending = raw["carry"]
        carry = Carry(None if lengths is None else (float(lengths[0]), float(lengths[1])), int(pending))
        return EngineReading(**fields), carry
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"stored reading does not decode: {exc}") from None
