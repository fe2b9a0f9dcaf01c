"""Load samples as the domain sees them: what a serving framework pushes or a scraper derives.

Field names are the wire API's (``opscale.api.ingest.v1.Sample``), so an error about a domain sample
names the field the caller actually sent. Values are checked by ``validate.validate_samples``, not here:
construction stays cheap on the hot path (tens of thousands per second) and the error can name the
sample's index in its batch.

Why these value classes are not ``frozen``: ingest builds two per pushed sample, and a frozen
dataclass's ``__init__`` (one ``object.__setattr__`` per field) measured 1.08 µs against 0.25 µs for
the same class unfrozen. Treat them as immutable all the same; nothing in opscale mutates one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from opscale.pools import PoolKey


class LatencyKind(enum.StrEnum):
    """Which latency; the value is the wire field and the series name."""

    TTFT = "ttft_ms"
    TBT = "tbt_ms"
    E2E = "e2e_ms"


@dataclass(slots=True)
class Arrival:
    """``count`` requests arrived, each with these lengths."""

    FIELD: ClassVar[str] = "arrival"
    NEEDS_POOL: ClassVar[bool] = False

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    count: int = 1


@dataclass(slots=True)
class Latency:
    """``count`` observations of ``ms``."""

    FIELD: ClassVar[str] = "latency"
    NEEDS_POOL: ClassVar[bool] = False

    kind: LatencyKind
    ms: float
    count: int = 1


@dataclass(slots=True)
class QueueState:
    """One instance's queue at the sample's time."""

    FIELD: ClassVar[str] = "queue"
    NEEDS_POOL: ClassVar[bool] = True

    running_requests: int
    waiting_requests: int
    kv_cache_usage_fraction: float


@dataclass(slots=True)
class Throughput:
    """Token rates of one instance over the ``interval_s`` that ended at the sample's time."""

    FIELD: ClassVar[str] = "throughput"
    NEEDS_POOL: ClassVar[bool] = True

    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    interval_s: float


@dataclass(slots=True)
class OperatorBusy:
    """Busy time of one operator replica over the ``interval_s`` that ended at the sample's time."""

    FIELD: ClassVar[str] = "busy"
    NEEDS_POOL: ClassVar[bool] = True

    busy_s: float
    interval_s: float
    batch_size: int


@dataclass(slots=True)
class GpuTelemetry:
    FIELD: ClassVar[str] = "gpu"
    NEEDS_POOL: ClassVar[bool] = False

    utilization_fraction: float
    power_watts: float


Payload = Arrival | Latency | QueueState | Throughput | OperatorBusy | GpuTelemetry
PAYLOAD_FIELDS = tuple(
    t.FIELD for t in (Arrival, Latency, QueueState, Throughput, OperatorBusy, GpuTelemetry)
)


@dataclass(slots=True)
class Sample:
    """``at_s``: when it was observed (seconds since the epoch; the wire sends ``timestamp_ms``).
    ``pool``: required for queue, throughput and busy payloads, ignored for the others (arrivals,
    latencies and GPU telemetry are deployment-wide). ``instance`` is for logs and errors only."""

    deployment: str
    at_s: float
    payload: Payload
    pool: PoolKey | None = None
    instance: str = ""


@dataclass(slots=True)
class SampleBatch:
    """Applied all or nothing; ``batch_id`` (None: no deduplication) makes a retry count once."""

    samples: tuple[Sample, ...]
    batch_id: str | None = None
