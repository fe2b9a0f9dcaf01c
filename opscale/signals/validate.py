"""Checks on a batch of samples before anything is written: all pass, or the batch is refused.

Every rejection is ``InvalidArgument`` naming ``samples[i].<field>`` as the wire API spells it and the
allowed range. The time checks are the counter store's own (same ``now_s``, same millisecond and
bucket arithmetic), so a batch that passes here is never refused by the store for its timestamps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from opscale.counters import StoreSettings
from opscale.counters.layout import to_ms
from opscale.errors import InvalidArgument
from opscale.pools import PoolKey
from opscale.signals.samples import (
    PAYLOAD_FIELDS,
    Arrival,
    GpuTelemetry,
    Latency,
    LatencyKind,
    OperatorBusy,
    QueueState,
    Sample,
    Throughput,
)
from opscale.spec import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a sample must respect; far beyond anything real, so a hit means a broken client."""

    # A sample within one bucket is at most 4 store writes before aggregation (throughput: decode and
    # prefill tokens, per pool and deployment-wide), so 2,500 keeps a batch under the store's default
    # max_batch_writes of 10,000 even when nothing aggregates. (Long throughput intervals spread over
    # several buckets; a batch that still folds into too many writes is refused whole by the app.)
    max_samples: int = 2_500
    max_tokens: int = 1 << 24  # per request: 16.7M, far past any context window
    max_count: int = 1_000_000  # aggregated observations in one sample
    max_latency_ms: float = 3_600_000.0  # an hour
    max_requests: int = 1_000_000  # running or waiting in one instance
    max_tokens_per_s: float = 1e9
    # Throughput tokens are spread over the buckets the interval covers, so a long interval is many
    # writes; a scraper that lost its target longer than this re-baselines instead.
    max_throughput_interval_s: float = 60.0
    max_busy_interval_s: float = 3600.0
    max_batch_size: int = 1_000_000
    max_power_watts: float = 10_000.0
    max_instance_len: int = 253


DEFAULT_LIMITS = Limits()


def _fail(where: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{where}: {message}", field=where)


# The checks below run for every sample of every push: they take the sample's index and a constant
# field name, and build the "samples[i].field" text only when they fail.


def _int(value: object, i: int, field: str, hi: int, lo: int = 0) -> None:
    if type(value) is not int or not lo <= value <= hi:  # bool is refused too: type(True) is bool
        raise _fail(f"samples[{i}].{field}", f"must be an integer in [{lo}, {hi}], got {value!r}")


def _float(value: object, i: int, field: str, hi: float, *, lo: float = 0.0, open_lo: bool = False) -> float:
    # type() first: the common case (a plain float) costs one comparison.
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _fail(f"samples[{i}].{field}", f"must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise _fail(f"samples[{i}].{field}", f"must be finite, got {value!r}")
    if v < lo or (open_lo and v == lo) or v > hi:
        bracket = "(" if open_lo else "["
        raise _fail(f"samples[{i}].{field}", f"must be in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return v


_LATENCY_FIELDS = {k: f"latency.{k.value}" for k in LatencyKind}


class _Checker:
    """One batch's checks; caches what repeats across samples (names seen valid)."""

    def __init__(self, now_s: float, store: StoreSettings, limits: Limits) -> None:
        self.limits = limits
        self.now_ms = to_ms(now_s)
        self.bucket_ms = store.bucket_ms
        self.retention_ms = store.retention_ms
        self.max_future_ms = store.max_future_ms
        self.names: set[str] = set()

    def time(self, at_s: object, i: int, earliest_s: float = 0.0) -> None:
        """``at_s`` (and ``at_s - earliest_s``, the start of an interval) must be inside what the store
        keeps: no later than ``max_future_s`` ahead and not in a bucket past retention."""
        if (
            isinstance(at_s, bool)
            or not isinstance(at_s, int | float)
            or not math.isfinite(at_s)
            or at_s <= 0
        ):
            raise _fail(
                f"samples[{i}].timestamp_ms", f"is required: milliseconds since the Unix epoch, got {at_s!r}"
            )
        at_ms = to_ms(at_s)
        if at_ms > self.now_ms + self.max_future_ms:
            ahead = (at_ms - self.now_ms) / 1000
            raise _fail(
                f"samples[{i}].timestamp_ms",
                f"is {ahead:.3f} s ahead of the server clock; "
                f"at most {self.max_future_ms / 1000:g} s ahead is accepted",
            )
        first_ms = to_ms(at_s - earliest_s) if earliest_s else at_ms
        if first_ms - first_ms % self.bucket_ms + self.bucket_ms + self.retention_ms <= self.now_ms:
            age = (self.now_ms - first_ms) / 1000
            what = "the interval starts" if earliest_s else "it is"
            raise _fail(
                f"samples[{i}].timestamp_ms",
                f"{what} {age:.3f} s in the past; samples older than the retained window "
                f"({self.retention_ms / 1000:g} s) are refused",
            )

    def name(self, value: object, i: int) -> None:
        if value in self.names:
            return
        where = f"samples[{i}].deployment"
        if not isinstance(value, str) or not value:
            raise _fail(where, "is required")
        if not _NAME.match(value):
            raise _fail(where, f"{value!r} is not a deployment name (DNS label: a-z, 0-9, '-', 1..63 chars)")
        self.names.add(value)

    def payload(self, p: object, i: int) -> None:
        lim = self.limits
        if isinstance(p, Latency):
            if not isinstance(p.kind, LatencyKind):
                raise _fail(f"samples[{i}].latency", f"kind must be a LatencyKind, got {p.kind!r}")
            _float(p.ms, i, _LATENCY_FIELDS[p.kind], lim.max_latency_ms)
            _int(p.count, i, "latency.count", lim.max_count, 1)
        elif isinstance(p, Arrival):
            _int(p.input_tokens, i, "arrival.input_tokens", lim.max_tokens)
            _int(p.output_tokens, i, "arrival.output_tokens", lim.max_tokens)
            _int(p.cached_input_tokens, i, "arrival.cached_input_tokens", p.input_tokens)
            _int(p.count, i, "arrival.count", lim.max_count, 1)
        elif isinstance(p, QueueState):
            _int(p.running_requests, i, "queue.running_requests", lim.max_requests)
            _int(p.waiting_requests, i, "queue.waiting_requests", lim.max_requests)
            _float(p.kv_cache_usage_fraction, i, "queue.kv_cache_usage_fraction", 1.0)
        elif isinstance(p, Throughput):
            _float(p.decode_tokens_per_s, i, "throughput.decode_tokens_per_s", lim.max_tokens_per_s)
            _float(p.prefill_tokens_per_s, i, "throughput.prefill_tokens_per_s", lim.max_tokens_per_s)
            _float(p.interval_s, i, "throughput.interval_s", lim.max_throughput_interval_s, open_lo=True)
        elif isinstance(p, OperatorBusy):
            interval = _float(p.interval_s, i, "busy.interval_s", lim.max_busy_interval_s, open_lo=True)
            _float(p.busy_s, i, "busy.busy_s", interval)
            _int(p.batch_size, i, "busy.batch_size", lim.max_batch_size)
        elif isinstance(p, GpuTelemetry):
            _float(p.utilization_fraction, i, "gpu.utilization_fraction", 1.0)
            _float(p.power_watts, i, "gpu.power_watts", lim.max_power_watts)
        else:
            raise _fail(
                f"samples[{i}]",
                f"payload must be one of {', '.join(PAYLOAD_FIELDS)}; got {type(p).__name__}",
            )

    def sample(self, s: object, i: int) -> None:
        if not isinstance(s, Sample):
            raise _fail(f"samples[{i}]", f"must be a Sample, got {type(s).__name__}")
        self.name(s.deployment, i)
        p = s.payload
        self.payload(p, i)
        self.time(s.at_s, i, p.interval_s if isinstance(p, Throughput) else 0.0)
        pool = s.pool
        if pool is None:
            if p.NEEDS_POOL:
                raise _fail(f"samples[{i}].pool", f"is required for a {p.FIELD} sample (at least its stage)")
        elif not isinstance(pool, PoolKey):
            raise _fail(f"samples[{i}].pool", f"must be a PoolKey, got {type(pool).__name__}")
        instance = s.instance
        if not isinstance(instance, str) or len(instance) > self.limits.max_instance_len:
            raise _fail(
                f"samples[{i}].instance",
                f"must be a string of at most {self.limits.max_instance_len} characters",
            )


def validate_samples(
    samples: Sequence[Sample], *, now_s: float, store: StoreSettings, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Raises ``InvalidArgument`` for the first bad sample (by index), or for an oversize batch."""
    if len(samples) > limits.max_samples:
        raise InvalidArgument(
            f"samples: a batch holds at most {limits.max_samples} samples, got {len(samples)}; split it",
            field="samples",
        )
    check = _Checker(now_s, store, limits)
    for i, s in enumerate(samples):
        check.sample(s, i)
