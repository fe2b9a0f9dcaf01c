"""Scrape loops: poll each configured vLLM/SGLang ``/metrics`` and push what changed as samples.

One loop per target runs as a background task of the ingest service. Each scrape: fetch, parse,
read the engine's metrics, derive samples from the previous successful reading
(``opscale.scrape.derive_samples``), and push them through ``IngestApp.push`` — the same validation,
deployment check and atomic write as a client's push.

An unreachable or failing target writes nothing, so its signals go stale (the decision loop holds
its last decision) rather than reading as zero load. The previous reading is only replaced after a
successful push, so the first good scrape after a short outage covers the whole gap; after a long one
(over ``max_gap_s``) it re-baselines. Health per target — last success, last error, consecutive
failures — is kept here, exported on the ingest ``/metrics`` and logged on the first failure, every
``LOG_EVERY`` failures after that, and on recovery (not on every failed second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from opscale.clock import Clock
from opscale.config import ScrapeEngine, ScrapeRole, ScrapeTarget
from opscale.errors import OpscaleError
from opscale.scrape import (
    Engine,
    EngineReading,
    ExpositionError,
    derive_samples,
    detect_engine,
    parse_exposition,
    read_engine,
)
from opscale.signals import SampleBatch
from opscale.spec import OperatorKind, PoolRef, Stage
from services.ingest.app import IngestApp
from services.ingest.http_fetch import FetchError, http_get
from services.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)

Fetch = Callable[[str, float], Awaitable[str]]
LOG_EVERY = 60
_STAGE = {
    ScrapeRole.PREFILL: Stage.PREFILL,
    ScrapeRole.DECODE: Stage.DECODE,
    ScrapeRole.SERVING: Stage.SERVING,
}


@dataclass
class TargetHealth:
    last_attempt_s: float | None = None
    last_success_s: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    engine: Engine | None = None
    missing_metrics: tuple[str, ...] = ()


class ScrapeLoop:
    def __init__(
        self,
        target: ScrapeTarget,
        app: IngestApp,
        clock: Clock,
        metrics: IngestMetrics,
        *,
        interval_s: float,
        fetch: Fetch = http_get,
        max_gap_s: float = 60.0,
    ) -> None:
        self.target = target
        self.health = TargetHealth()
        self._app = app
        self._clock = clock
        self._fetch = fetch
        self._interval_s = interval_s
        self._max_gap_s = max_gap_s
        self._pool = PoolRef(stage=_STAGE[target.role], operator=OperatorKind.MODEL)
        parts = urlsplit(target.url)
        self._instance = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        self._previous: EngineReading | None = None
        labels = (target.url, target.deployment, target.role.value)
        self._up = metrics.scrape_up.labels(*labels)
        self._last_success = metrics.scrape_last_success.labels(*labels)
        self._failures = metrics.scrape_failures.labels(*labels)
        self._ok = metrics.scrapes.labels(*labels, "ok")
        self._error = metrics.scrapes.labels(*labels, "error")
        self._resets = metrics.counter_resets.labels(*labels)

    @property
    def _where(self) -> dict[str, str]:
        return {"deployment": self.target.deployment, "service": "ingest"}

    def _engine(self, found: Engine | None) -> Engine:
        if self.target.engine is ScrapeEngine.VLLM:
            return Engine.VLLM
        if self.target.engine is ScrapeEngine.SGLANG:
            return Engine.SGLANG
        if found is None:
            raise ExpositionError("no vLLM or SGLang serving metrics in the response")
        return found

    async def scrape_once(self) -> bool:
        """One scrape; True if it succeeded (its samples, if any, were written)."""
        at_s = self._clock.now()
        self.health.last_attempt_s = at_s
        try:
            text = await self._fetch(self.target.url, self.target.timeout_s)
            expo = parse_exposition(text)
            engine = self._engine(detect_engine(expo))
            reading = read_engine(expo, engine, at_s)
            derived = derive_samples(
                self._previous,
                reading,
                deployment=self.target.deployment,
                pool=self._pool,
                instance=self._instance,
                max_gap_s=self._max_gap_s,
            )
            if derived.samples:
                await self._app.push(SampleBatch(derived.samples), source="scrape")
        except (FetchError, ExpositionError, OpscaleError) as exc:
            self._failed(str(exc))
            return False
        self._previous = reading
        if derived.counter_reset:
            self._resets.inc()
            log.info("%s: counters went back (engine restart?)", self.target.url, extra=self._where)
        self._succeeded(at_s, engine, reading.missing)
        return True

    def _failed(self, error: str) -> None:
        h = self.health
        h.last_error = error
        h.consecutive_failures += 1
        self._up.set(0)
        self._failures.set(h.consecutive_failures)
        self._error.inc()
        if h.consecutive_failures == 1 or h.consecutive_failures % LOG_EVERY == 0:
            log.warning(
                "scrape of %s failed (%d in a row): %s; its signals go stale",
                self.target.url,
                h.consecutive_failures,
                error,
                extra=self._where,
            )

    def _succeeded(self, at_s: float, engine: Engine, missing: tuple[str, ...]) -> None:
        h = self.health
        if h.consecutive_failures:
            log.info(
                "scrape of %s recovered after %d failures",
                self.target.url,
                h.consecutive_failures,
                extra=self._where,
            )
        if missing != h.missing_metrics and missing:
            log.warning("%s does not export %s", self.target.url, ", ".join(missing), extra=self._where)
        h.last_success_s, h.consecutive_failures, h.engine, h.missing_metrics = at_s, 0, engine, missing
        self._up.set(1)
        self._failures.set(0)
        self._last_success.set(at_s)
        self._ok.inc()

    async def run(self, stopping: asyncio.Event) -> None:
        """Scrape every ``interval_s`` (on the monotonic clock, without drift) until ``stopping`` is set."""
        next_at = self._clock.monotonic()
        while not stopping.is_set():
            await self.scrape_once()
            next_at += self._interval_s
            delay = next_at - self._clock.monotonic()
            if delay < 0:  # a slow scrape: skip the missed slots rather than scrape back to back
                next_at -= (delay // self._interval_s) * self._interval_s
                delay = next_at - self._clock.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=max(0.0, delay))


def build_loops(
    targets: list[ScrapeTarget],
    default_interval_s: float,
    app: IngestApp,
    clock: Clock,
    metrics: IngestMetrics,
) -> list[ScrapeLoop]:
    return [
        ScrapeLoop(t, app, clock, metrics, interval_s=t.interval_s or default_interval_s) for t in targets
    ]
