"""Key names and the millisecond time base, shared by both twins.

Key layout (Redis prepends its prefix; the twin uses the same strings as dict keys):

- ``b:<kind>:<namespace>:<name>:<labels>:<bucket_start_ms>`` — one hash per series and time bucket.
  Fields: ``s`` sum (float), ``n`` count (int), ``lo``/``hi`` min/max, ``l``/``t`` newest gauge value
  and its at_s, ``b<i>`` histogram bin i count (int).
- ``m:<kind>:<namespace>:<name>:<labels>`` — per-series meta hash; field ``t`` = newest at_s written.
- ``d:<batch_id>`` — the ms timestamp at which that batch was applied (dedupe).

``<kind>`` is c/g/h, ``<labels>`` is ``k1=v1,k2=v2`` sorted by key (empty when there are none).
``SeriesKey`` allows none of ``: , =`` in these parts, so a key decodes unambiguously.
"""

from __future__ import annotations

import math

from opscale.counters.base import Kind, SeriesKey
from opscale.errors import InvalidArgument

MAX_BATCH_ID_LEN = 200


def to_ms(t_s: float) -> int:
    """Whole milliseconds at or below ``t_s``. Rounds to the microsecond first so that float noise
    (``2.01 * 1000 == 2009.9999999999998``) cannot push an instant into the previous millisecond or bucket."""
    return round(t_s * 1_000_000) // 1000


def series_id(kind: Kind, key: SeriesKey) -> str:
    labels = ",".join(f"{k}={v}" for k, v in key.labels)
    return f"{kind.value}:{key.namespace}:{key.name}:{labels}"


def bucket_key(sid: str, start_ms: int) -> str:
    return f"b:{sid}:{start_ms}"


def meta_key(sid: str) -> str:
    return f"m:{sid}"


def dedupe_key(batch_id: str) -> str:
    return f"d:{batch_id}"


def check_now(now_s: object) -> float:
    if isinstance(now_s, bool) or not isinstance(now_s, int | float) or not math.isfinite(now_s):
        raise InvalidArgument(f"now_s must be a finite number of seconds, got {now_s!r}", field="now_s")
    return float(now_s)


def check_batch_id(batch_id: object) -> str | None:
    if batch_id is None:
        return None
    ok = isinstance(batch_id, str) and 1 <= len(batch_id) <= MAX_BATCH_ID_LEN
    if not ok or not all("!" <= c <= "~" for c in str(batch_id)):
        raise InvalidArgument(
            f"batch_id must be 1..{MAX_BATCH_ID_LEN} printable ASCII characters without spaces",
            field="batch_id",
        )
    return str(batch_id)
