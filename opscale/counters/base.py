"""Hot-counter store port: the values it speaks in and the ``CounterStore`` protocol.

Metrics-ingest writes pre-aggregated, time-bucketed windows here; the decision loop reads them every
tick. Two implementations pass one contract suite (tests/contract/test_counters.py): Redis
(``redis.RedisCounterStore``) and an in-process twin (``memory.InMemoryCounterStore``).

Both twins share the code that decides *what* to write (``batch.prepare``) and *what a window means*
(``window.fold``: ``accumulate`` over the buckets, then ``finish``; Redis runs ``accumulate`` in Lua,
transcribed step for step, see ``redis_read``); an implementation only stores per-bucket hash fields.
That is why Redis and the twin agree bit for bit, not approximately, and why only storage is behind
the protocol.

Window semantics (the same for every kind): time is cut into ``bucket_s``-wide buckets aligned to the
epoch. A read at ``now_s`` over ``window_s`` covers the ``window_s / bucket_s`` buckets that have
*closed*, i.e. ``[end_s - window_s, end_s)`` with ``end_s = floor(now_s / bucket_s) * bucket_s``. The
bucket still filling is left out, so a rate is an average over time that has fully elapsed instead of
being dragged down by a part-filled bucket; a loop ticking on whole buckets reads exactly the last
``window_s`` seconds. Staleness is the exception: it looks at every sample ever written to the series
(still within retention), open bucket included, because it answers "is this signal alive at all".
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from opscale.errors import ConfigError, InvalidArgument


class Kind(Enum):
    """What a series holds; the kind is part of the series identity (a counter and a gauge of the same
    name are two series)."""

    COUNTER = "c"  # sum per bucket: arrivals, tokens, busy seconds, joules
    GAUGE = "g"  # sum, count, min, max and the newest value per bucket: queue depth, KV-cache use
    HISTOGRAM = "h"  # counts per value bin (fixed per family) + sum/count/min/max: TTFT, TBT


# Allow-lists rather than deny-lists: these strings become Redis key parts separated by ':', ',' and
# '=', so anything outside them could forge another series' key.
_PART = re.compile(r"[A-Za-z0-9_.\-/]+\Z")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_PART_LEN = 128
MAX_LABEL_KEY_LEN = 64
MAX_LABELS = 8


def _check_part(value: object, what: str, pattern: re.Pattern[str], max_len: int) -> str:
    if not isinstance(value, str) or not pattern.match(value) or len(value) > max_len:
        raise InvalidArgument(
            f"{what} must be 1..{max_len} characters from {pattern.pattern[:-2]}, got {value!r}",
            field=what,
        )
    return value


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One series: ``namespace`` (the deployment), ``name`` (e.g. ``ttft_ms``) and labels.

    Labels are stored sorted by key, so ``(("b","1"),("a","2"))`` and ``(("a","2"),("b","1"))`` are the
    same series.
    """

    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_part(self.namespace, "namespace", _PART, MAX_PART_LEN)
        _check_part(self.name, "name", _PART, MAX_PART_LEN)
        if not isinstance(self.labels, tuple) or len(self.labels) > MAX_LABELS:
            raise InvalidArgument(f"labels must be a tuple of at most {MAX_LABELS} pairs", field="labels")
        for i, pair in enumerate(self.labels):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidArgument(f"labels[{i}] must be a (key, value) pair", field=f"labels[{i}]")
            _check_part(pair[0], f"labels[{i}].key", _LABEL_KEY, MAX_LABEL_KEY_LEN)
            _check_part(pair[1], f"labels[{i}].value", _PART, MAX_PART_LEN)
        ordered = tuple(sorted(self.labels))
        if len({k for k, _ in ordered}) != len(ordered):
            raise InvalidArgument("labels must not repeat a key", field="labels")
        object.__setattr__(self, "labels", ordered)

    @classmethod
    def of(cls, namespace: str, name: str, **labels: str) -> SeriesKey:
        return cls(namespace, name, tuple(labels.items()))


@dataclass(frozen=True, slots=True)
class CounterWrite:
    """Add ``delta`` (>= 0) to the counter's bucket holding ``at_s``."""

    key: SeriesKey
    at_s: float
    delta: float


@dataclass(frozen=True, slots=True)
class GaugeWrite:
    """One gauge sample ``value`` taken at ``at_s``."""

    key: SeriesKey
    at_s: float
    value: float


@dataclass(frozen=True, slots=True)
class HistogramWrite:
    """``count`` observations (>= 1) of ``value`` (>= 0) at ``at_s``; count > 1 lets a client send
    what it has already aggregated."""

    key: SeriesKey
    at_s: float
    value: float
    count: int = 1


Write = CounterWrite | GaugeWrite | HistogramWrite


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Writes applied all or nothing. Values are checked at ``apply`` (not here) so that the error can
    name the write's index in the batch."""

    writes: tuple[Write, ...] = ()

    @classmethod
    def of(cls, *writes: Write) -> WriteBatch:
        return cls(tuple(writes))


@dataclass(frozen=True, slots=True)
class ReadQuery:
    """One series to read. Each query carries its own window because signals want different ones
    (decode tokens/s over 30 s, TTFT p99 over 60 s) and ``read_many`` should still be one round trip."""

    key: SeriesKey
    kind: Kind
    window_s: float


@dataclass(frozen=True, slots=True)
class HistogramLayout:
    """Upper bounds of a histogram family's bins: bin 0 is ``[0, bounds[0]]``, bin i is
    ``(bounds[i-1], bounds[i]]`` and the last bin ``(bounds[-1], inf)`` catches the rest.

    A layout must not change while data written with it is retained: bins are stored by index.
    """

    bounds: tuple[float, ...]

    def __post_init__(self) -> None:
        b = self.bounds
        ok = isinstance(b, tuple) and 1 <= len(b) <= 512
        ok = ok and all(isinstance(x, int | float) and math.isfinite(x) and x > 0 for x in b)
        if not ok or any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            raise ConfigError(
                "histogram bounds must be 1..512 finite, positive, strictly increasing numbers",
                field="bounds",
            )

    @classmethod
    def exponential(cls, start: float, factor: float, count: int) -> HistogramLayout:
        """``count`` bounds ``start * factor**i``: constant relative resolution (log-spaced)."""
        return cls(tuple(start * factor**i for i in range(count)))

    def bin_of(self, value: float) -> int:
        return bisect.bisect_left(self.bounds, value)

    def bin_range(self, index: int) -> tuple[float, float]:
        lower = 0.0 if index == 0 else self.bounds[min(index, len(self.bounds)) - 1]
        upper = self.bounds[index] if index < len(self.bounds) else math.inf
        return float(lower), float(upper)


# 1 .. ~240k with 8 bins per doubling (each bin ~9% wide): milliseconds of TTFT/TBT and token lengths.
DEFAULT_HISTOGRAM = HistogramLayout.exponential(1.0, 2 ** (1 / 8), 144)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Settings both twins share; one value so they validate and bucket identically.

    Times are handled in whole milliseconds, so every duration here must be one.
    """

    bucket_s: float = 1.0
    retention_s: float = 3600.0
    dedupe_ttl_s: float = 600.0
    # A sample stamped further ahead than this is a broken clock, not data: rejected.
    max_future_s: float = 60.0
    # One batch is one Lua script that blocks Redis while it runs: ~30 µs per distinct series+bucket
    # measured on a local Redis 7, so 10k distinct writes hold it for ~0.3 s. Keep batches small.
    max_batch_writes: int = 10_000
    default_histogram: HistogramLayout = DEFAULT_HISTOGRAM
    # Per histogram family (series name): bins shared by every series of that name.
    histograms: Mapping[str, HistogramLayout] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("bucket_s", "retention_s", "dedupe_ttl_s", "max_future_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0 or v > 10 * 365 * 86400:
                raise ConfigError(f"{name} must be a positive number of seconds, got {v!r}", field=name)
            if abs(round(v * 1000) - v * 1000) > 1e-6:
                raise ConfigError(f"{name} must be a whole number of milliseconds, got {v!r}", field=name)
        if self.retention_ms < self.bucket_ms:
            raise ConfigError("retention_s must be at least bucket_s", field="retention_s")
        if not isinstance(self.max_batch_writes, int) or self.max_batch_writes < 1:
            raise ConfigError("max_batch_writes must be a positive integer", field="max_batch_writes")

    @property
    def bucket_ms(self) -> int:
        return round(self.bucket_s * 1000)

    @property
    def retention_ms(self) -> int:
        return round(self.retention_s * 1000)

    @property
    def dedupe_ttl_ms(self) -> int:
        return round(self.dedupe_ttl_s * 1000)

    @property
    def max_future_ms(self) -> int:
        return round(self.max_future_s * 1000)

    def layout_for(self, name: str) -> HistogramLayout:
        return self.histograms.get(name, self.default_histogram)


@dataclass(frozen=True, slots=True)
class HistogramBin:
    lower: float  # exclusive, except 0 for the first bin
    upper: float  # inclusive; inf for the overflow bin
    count: int


@dataclass(frozen=True, slots=True)
class WindowRead:
    """One series over ``[start_s, end_s)``. Fields a kind does not have are None / empty."""

    key: SeriesKey
    kind: Kind
    start_s: float
    end_s: float
    count: int  # writes (counter), samples (gauge) or observations (histogram)
    sum: float  # deltas (counter), sample values (gauge) or observed values (histogram)
    min_value: float | None  # gauge and histogram
    max_value: float | None
    last_value: float | None  # gauge: the sample with the newest at_s in the window
    last_at_s: float | None
    bins: tuple[HistogramBin, ...]  # histogram: non-empty bins, ascending
    last_write_s: float | None  # newest at_s ever written to the series (None: never, or expired)
    staleness_s: float | None  # now_s - last_write_s, floored at 0 (a clock ahead of ours)

    @property
    def window_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def rate_per_s(self) -> float:
        return self.sum / self.window_s

    @property
    def count_per_s(self) -> float:
        return self.count / self.window_s

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Histogram quantile, ``q`` in [0, 1] (0.99 is p99); None with no observations.

        Rank ``q * count``; find the first bin whose cumulative count reaches it; interpolate linearly
        inside that bin. The first and last non-empty bins are narrowed to the observed min and max,
        so q=0 and q=1 are exact and the overflow bin has a finite top.
        """
        if self.kind is not Kind.HISTOGRAM:
            raise InvalidArgument(f"quantile needs a histogram series, {self.key.name} is {self.kind.name}")
        if not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
            raise InvalidArgument(f"q must be in [0, 1], got {q!r}", field="q")
        if not self.bins or self.min_value is None or self.max_value is None:
            return None
        rank = q * sum(b.count for b in self.bins)
        before = 0
        for b in self.bins:
            if before + b.count >= rank:
                lo, hi = max(b.lower, self.min_value), min(b.upper, self.max_value)
                return lo + (hi - lo) * (rank - before) / b.count
            before += b.count
        return self.max_value  # only reachable through float rounding of rank

    def quantiles(self, qs: Sequence[float]) -> tuple[float | None, ...]:
        return tuple(self.quantile(q) for q in qs)


class CounterStore(Protocol):
    """Time-bucketed counters, gauges and histograms. Every method takes ``now_s`` from the caller
    (never the wall clock), so the simulator and tests drive it on a virtual clock. ``now_s`` is
    expected not to go backwards: a twin may already have dropped what retention expired."""

    @property
    def settings(self) -> StoreSettings: ...

    async def apply(self, batch: WriteBatch, *, batch_id: str | None = None, now_s: float) -> bool:
        """Apply every write or none. Returns False, writing nothing, when ``batch_id`` was applied
        less than ``dedupe_ttl_s`` ago. Raises ``InvalidArgument`` (naming ``writes[i].field``) before
        writing anything, ``ResourceExhausted`` over ``max_batch_writes``, ``Unavailable`` when the
        backend cannot be reached. Without a ``batch_id`` a retry after a lost reply may count twice."""
        ...

    async def read(self, key: SeriesKey, kind: Kind, *, now_s: float, window_s: float) -> WindowRead: ...

    async def read_many(self, queries: Sequence[ReadQuery], *, now_s: float) -> list[WindowRead]:
        """Several series in one round trip; results in query order."""
        ...

    async def ping(self) -> None:
        """Returns when the backend answers; raises ``Unavailable`` otherwise."""
        ...

    async def close(self) -> None: ...
