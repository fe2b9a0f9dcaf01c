"""Metrics-ingest use cases (transport-free): apply a batch of samples, summarise a window.

A batch is checked whole before anything is written — values and timestamps (``validate_samples``),
then every deployment it names (``DeploymentDirectory``) — then folded into pre-aggregated writes and
applied in one atomic, idempotent store call. So a refused batch leaves the store as it was, and a
retried batch (same ``batch_id``) counts once. Pushes and the scrape loops take this same path.

Time comes from the runtime's clock only (``now_s`` is read once per batch and used for validation and
the write, so the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from opscale.clock import Clock
from opscale.counters import CounterStore
from opscale.counters.layout import check_batch_id
from opscale.errors import InvalidArgument, OpscaleError
from opscale.pools import PoolKey
from opscale.services.ingest.deployments import DeploymentDirectory
from opscale.services.ingest.metrics import IngestMetrics, reason_for
from opscale.signals import (
    DEFAULT_LIMITS,
    Limits,
    SampleBatch,
    WindowSummary,
    check_window,
    read_window_summary,
    samples_to_writes,
    validate_samples,
)

MAX_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class WindowQuery:
    deployment: str
    window_s: float
    pools: tuple[PoolKey, ...] = ()  # empty: every pool that has data


@dataclass(frozen=True, slots=True)
class PushResult:
    accepted_samples: int  # counted by this call (0 for a duplicate)
    duplicate: bool


class IngestApp:
    def __init__(
        self,
        counters: CounterStore,
        deployments: DeploymentDirectory,
        clock: Clock,
        metrics: IngestMetrics,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._counters = counters
        self._deployments = deployments
        self._clock = clock
        self._metrics = metrics
        self._limits = limits

    @property
    def metrics(self) -> IngestMetrics:
        return self._metrics

    @property
    def deployments(self) -> DeploymentDirectory:
        return self._deployments

    async def push(self, batch: SampleBatch, *, source: str) -> PushResult:
        """Apply ``batch`` all or nothing. ``source`` (push, stream, scrape) labels the metrics."""
        started = self._clock.monotonic()
        try:
            result = await self._apply(batch)
        except OpscaleError as exc:
            self.refused(exc, source=source)
            raise
        finally:
            self._metrics.latency.labels(source).observe(max(0.0, self._clock.monotonic() - started))
        if result.duplicate:
            self._metrics.duplicates.labels(source).inc()
        else:
            self._metrics.batches.labels(source).inc()
            self._metrics.samples.labels(source).inc(result.accepted_samples)
        return result

    def refused(self, exc: OpscaleError, *, source: str) -> None:
        """Count a batch refused before it reached ``push`` (malformed on the wire)."""
        self._metrics.rejected.labels(source, reason_for(exc)).inc()

    async def _apply(self, batch: SampleBatch) -> PushResult:
        store = self._counters
        now_s = self._clock.now()
        batch_id = check_batch_id(batch.batch_id)
        validate_samples(batch.samples, now_s=now_s, store=store.settings, limits=self._limits)
        first_use: dict[str, int] = {}
        for i, s in enumerate(batch.samples):
            first_use.setdefault(s.deployment, i)
        for name, i in first_use.items():
            await self._deployments.require(name, f"samples[{i}].deployment")
        writes = samples_to_writes(batch.samples, store.settings)
        if len(writes.writes) > store.settings.max_batch_writes:
            # Only reachable with many deployments/pools and long throughput intervals in one batch.
            raise InvalidArgument(
                f"samples: the batch folds into {len(writes.writes)} distinct series-bucket writes, "
                f"more than the {store.settings.max_batch_writes} one batch may make; send fewer "
                "deployments, pools or buckets per batch",
                field="samples",
            )
        applied = await store.apply(writes, batch_id=batch_id, now_s=now_s)
        return PushResult(accepted_samples=len(batch.samples) if applied else 0, duplicate=not applied)

    async def window_summary(self, query: WindowQuery) -> WindowSummary:
        settings = self._counters.settings
        window_s = check_window(query.window_s, settings.bucket_s, min(settings.retention_s, MAX_WINDOW_S))
        await self._deployments.require(query.deployment, "deployment")
        return await read_window_summary(
            self._counters,
            query.deployment,
            now_s=self._clock.now(),
            window_s=window_s,
            pools=query.pools or None,
        )
