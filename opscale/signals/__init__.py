"""The load signals: the one definition shared by metrics-ingest (which writes them) and the decision
loop (which reads them).

- ``samples``: what is pushed or scraped (``Sample`` with an ``Arrival``, ``Latency``, ``QueueState``,
  ``Throughput``, ``OperatorBusy`` or ``GpuTelemetry`` payload).
- ``validate``: ``validate_samples`` — the checks a batch passes before anything is written.
- ``series``: series names, labels and histogram layouts; ``store_settings()`` for the counter store.
- ``writes``: ``samples_to_writes`` — samples to pre-aggregated counter-store writes.
- ``summary``: ``read_window_summary`` — a deployment's ``WindowSummary`` in one round trip.

A package rather than one module so that each part stays small enough to read; import from here.
"""

from opscale.signals.samples import (
    Arrival,
    GpuTelemetry,
    Latency,
    LatencyKind,
    OperatorBusy,
    Payload,
    QueueState,
    Sample,
    SampleBatch,
    Throughput,
)
from opscale.signals.series import (
    ALL_POOLS,
    HISTOGRAMS,
    SIGNALS,
    TBT_LAYOUT,
    TOKENS_LAYOUT,
    TTFT_LAYOUT,
    deployment_key,
    layouts_match,
    pool_key,
    store_settings,
)
from opscale.signals.summary import (
    Distribution,
    PoolSummary,
    WindowSummary,
    check_window,
    discover_pools,
    read_window_summary,
)
from opscale.signals.validate import DEFAULT_LIMITS, Limits, validate_samples
from opscale.signals.writes import samples_to_writes

__all__ = [
    "ALL_POOLS",
    "DEFAULT_LIMITS",
    "HISTOGRAMS",
    "SIGNALS",
    "TBT_LAYOUT",
    "TOKENS_LAYOUT",
    "TTFT_LAYOUT",
    "Arrival",
    "Distribution",
    "GpuTelemetry",
    "Latency",
    "LatencyKind",
    "Limits",
    "OperatorBusy",
    "Payload",
    "PoolSummary",
    "QueueState",
    "Sample",
    "SampleBatch",
    "Throughput",
    "WindowSummary",
    "check_window",
    "deployment_key",
    "discover_pools",
    "layouts_match",
    "pool_key",
    "read_window_summary",
    "samples_to_writes",
    "store_settings",
    "validate_samples",
]
