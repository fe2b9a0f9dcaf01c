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
from opscale.spec import NAME_PATTERN, PoolRef

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


def _int(value: object, where: str, hi: int, lo: int = 0) -> None:
    if type(value) is not int or not lo <= value <= hi:  # bool is refused too: type(True) is bool
        raise _fail(where, f"must be an integer in [{lo}, {hi}], got {value!r}")


def _float(value: object, where: str, hi: float, *, lo: float = 0.0, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _fail(where, f"must be finite, got {value!r}")
    if value < lo or (open_lo and value == lo) or value > hi:
        bracket = "(" if open_lo else "["
        raise _fail(where, f"must be in {bracket}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


class _Checker:
    """One batch's checks; caches what repeats across samples (names seen valid)."""

    def __init__(self, now_s: float, store: StoreSettings, limits: Limits) -> None:
        self.limits = limits
        self.now_ms = to_ms(now_s)
        self.bucket_ms = store.bucket_ms
        self.retention_ms = store.retention_ms
        self.max_future_ms = store.max_future_ms
        self.names: set[str] = set()

    def time(self, at_s: object, where: str, earliest_s: float = 0.0) -> None:
        """``at_s`` (and ``at_s - earliest_s``, the start of an interval) must be inside what the store
        keeps: no later than ``max_future_s`` ahead and not in a bucket past retention."""
        w = f"{where}.timestamp_ms"
        if (
            isinstance(at_s, bool)
            or not isinstance(at_s, int | float)
            or not math.isfinite(at_s)
            or at_s <= 0
        ):
            raise _fail(w, f"is required: milliseconds since the Unix epoch, got {at_s!r}")
        at_ms = to_ms(at_s)
        if at_ms > self.now_ms + self.max_future_ms:
            ahead = (at_ms - self.now_ms) / 1000
            raise _fail(
                w,
                f"is {ahead:.3f} s ahead of the server clock; "
                f"at most {self.max_future_ms / 1000:g} s ahead is accepted",
            )
        first_ms = to_ms(at_s - earliest_s)
        if first_ms - first_ms % self.bucket_ms + self.bucket_ms + self.retention_ms <= self.now_ms:
            age = (self.now_ms - first_ms) / 1000
            what = "the interval starts" if earliest_s else "it is"
            raise _fail(
                w,
                f"{what} {age:.3f} s in the past; samples older than the retained window "
                f"({self.retention_ms / 1000:g} s) are refused",
            )

    def name(self, value: object, where: str) -> None:
        if value in self.names:
            return
        if not isinstance(value, str) or not value:
            raise _fail(where, "is required")
        if not _NAME.match(value):
            raise _fail(where, f"{value!r} is not a deployment name (DNS label: a-z, 0-9, '-', 1..63 chars)")
        self.names.add(value)

    def payload(self, p: object, where: str) -> None:
        lim = self.limits
        if isinstance(p, Latency):
            if not isinstance(p.kind, LatencyKind):
                raise _fail(f"{where}.latency", f"kind must be a LatencyKind, got {p.kind!r}")
            _float(p.ms, f"{where}.latency.{p.kind.value}", lim.max_latency_ms)
            _int(p.count, f"{where}.latency.count", lim.max_count, 1)
        elif isinstance(p, Arrival):
            w = f"{where}.arrival"
            _int(p.input_tokens, f"{w}.input_tokens", lim.max_tokens)
            _int(p.output_tokens, f"{w}.output_tokens", lim.max_tokens)
            _int(p.cached_input_tokens, f"{w}.cached_input_tokens", p.input_tokens)
            _int(p.count, f"{w}.count", lim.max_count, 1)
        elif isinstance(p, QueueState):
            w = f"{where}.queue"
            _int(p.running_requests, f"{w}.running_requests", lim.max_requests)
            _int(p.waiting_requests, f"{w}.waiting_requests", lim.max_requests)
            _float(p.kv_cache_usage_fraction, f"{w}.kv_cache_usage_fraction", 1.0)
        elif isinstance(p, Throughput):
            w = f"{where}.throughput"
            _float(p.decode_tokens_per_s, f"{w}.decode_tokens_per_s", lim.max_tokens_per_s)
            _float(p.prefill_tokens_per_s, f"{w}.prefill_tokens_per_s", lim.max_tokens_per_s)
            _float(p.interval_s, f"{w}.interval_s", lim.max_throughput_interval_s, open_lo=True)
        elif isinstance(p, OperatorBusy):
            w = f"{where}.busy"
            interval = _float(p.interval_s, f"{w}.interval_s", lim.max_busy_interval_s, open_lo=True)
            _float(p.busy_s, f"{w}.busy_s", interval)
            _int(p.batch_size, f"{w}.batch_size", lim.max_batch_size)
        elif isinstance(p, GpuTelemetry):
            _float(p.utilization_fraction, f"{where}.gpu.utilization_fraction", 1.0)
            _float(p.power_watts, f"{where}.gpu.power_watts", lim.max_power_watts)
        else:
            raise _fail(
                where,
                f"payload must be one of {', '.join(PAYLOAD_FIELDS)}; got {type(p).__name__}",
            )

    def sample(self, s: object, i: int) -> None:
        where = f"samples[{i}]"
        if not isinstance(s, Sample):
            raise _fail(where, f"must be a Sample, got {type(s).__name__}")
        self.name(s.deployment, f"{where}.deployment")
        self.payload(s.payload, where)
        p = s.payload
        self.time(s.at_s, where, p.interval_s if isinstance(p, Throughput) else 0.0)
        if s.pool is not None and not isinstance(s.pool, PoolRef):
            raise _fail(f"{where}.pool", f"must be a PoolRef, got {type(s.pool).__name__}")
        if s.pool is None and p.NEEDS_POOL:
            raise _fail(f"{where}.pool", f"is required for a {p.FIELD} sample (at least its stage)")
        if not isinstance(s.instance, str) or len(s.instance) > self.limits.max_instance_len:
            raise _fail(
                f"{where}.instance", f"must be a string of at most {self.limits.max_instance_len} characters"
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
