"""In-process twin of the Redis counter store (the embedded default, tests, the simulator).

It stores exactly what Redis stores — the same key strings mapping to the same hash fields — and
expires keys by the ``now_s`` it is given, never the wall clock: lazily, on every call, from a heap of
deadlines. No method awaits between reading and writing its dicts, so on one asyncio loop every call
is atomic; it is not meant to be shared between threads.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from opscale.counters.base import Kind, ReadQuery, SeriesKey, StoreSettings, WindowRead, WriteBatch
from opscale.counters.batch import ADD_FLOAT, ADD_INT, KEEP_MAX, KEEP_MIN, KEEP_NEWEST, Op, prepare
from opscale.counters.layout import check_batch_id, check_now, dedupe_key, to_ms
from opscale.counters.window import fold, plan


def _apply_op(fields: dict[str, float | int], op: Op) -> None:
    """The Python half of the op semantics in ``batch``; ``redis._APPLY_LUA`` is the other."""
    cur = fields.get(op.field)
    if op.code == ADD_FLOAT:
        fields[op.field] = float(cur or 0.0) + float(op.value)
    elif op.code == ADD_INT:
        fields[op.field] = int(cur or 0) + int(op.value)
    elif op.code == KEEP_MIN:
        if cur is None or op.value < cur:
            fields[op.field] = float(op.value)
    elif op.code == KEEP_MAX:
        if cur is None or op.value > cur:
            fields[op.field] = float(op.value)
    elif op.code == KEEP_NEWEST:
        t = fields.get("t")
        if t is None or op.at_s >= t:
            fields[op.field], fields["t"] = float(op.value), op.at_s
    else:  # pragma: no cover - batch.prepare emits only the codes above
        raise AssertionError(f"unknown op code {op.code!r}")


class InMemoryCounterStore:
    def __init__(self, settings: StoreSettings | None = None) -> None:
        self._settings = settings or StoreSettings()
        self._hashes: dict[str, dict[str, float | int]] = {}
        self._applied: dict[str, int] = {}  # dedupe key -> now_ms it was applied at
        self._deadline: dict[str, int] = {}  # key -> now_ms at which it expires
        self._heap: list[tuple[int, str]] = []  # (deadline, key); stale entries are skipped

    @property
    def settings(self) -> StoreSettings:
        return self._settings

    def __len__(self) -> int:
        """Keys held (buckets, metas and dedupe records); lets tests see that expiry frees memory."""
        return len(self._hashes) + len(self._applied)

    def _expire(self, now_ms: int) -> None:
        while self._heap and self._heap[0][0] <= now_ms:
            deadline, key = heapq.heappop(self._heap)
            if self._deadline.get(key) == deadline:  # not extended since this entry was pushed
                del self._deadline[key]
                self._hashes.pop(key, None)
                self._applied.pop(key, None)

    def _live_until(self, key: str, deadline: int) -> None:
        """Like the Redis script's ``if PTTL < ttl then PEXPIRE``: extend, never shorten."""
        if self._deadline.get(key, -1) < deadline:
            self._deadline[key] = deadline
            heapq.heappush(self._heap, (deadline, key))

    async def apply(self, batch: WriteBatch, *, batch_id: str | None = None, now_s: float) -> bool:
        now_ms = to_ms(check_now(now_s))
        bid = check_batch_id(batch_id)
        prepared = prepare(batch, self._settings, now_ms)  # raises before anything below changes
        self._expire(now_ms)
        if bid is not None:
            dk = dedupe_key(bid)
            seen = self._applied.get(dk)
            if seen is not None and seen + self._settings.dedupe_ttl_ms > now_ms:
                return False
            self._applied[dk] = now_ms
            self._deadline.pop(dk, None)  # a fresh record: its deadline restarts, as SET PX does
            self._live_until(dk, now_ms + self._settings.dedupe_ttl_ms)
        for ko in prepared.key_ops:
            fields = self._hashes.setdefault(ko.key, {})
            for op in ko.ops:
                _apply_op(fields, op)
            self._live_until(ko.key, now_ms + ko.ttl_ms)
        return True

    async def read(self, key: SeriesKey, kind: Kind, *, now_s: float, window_s: float) -> WindowRead:
        return (await self.read_many([ReadQuery(key, kind, window_s)], now_s=now_s))[0]

    async def read_many(self, queries: Sequence[ReadQuery], *, now_s: float) -> list[WindowRead]:
        now_s = check_now(now_s)
        now_ms = to_ms(now_s)
        plans = plan(queries, self._settings, now_ms)
        self._expire(now_ms)
        out = []
        for p in plans:
            buckets = [dict(self._hashes.get(k, {})) for k in p.bucket_keys]
            meta = self._hashes.get(p.meta_key, {}).get("t")
            out.append(fold(p, self._settings, now_s, buckets, None if meta is None else float(meta)))
        return out

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
