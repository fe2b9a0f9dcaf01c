"""Scraping one vLLM/SGLang ``/metrics`` endpoint: fetch once, split by model, push each model's
samples to its deployment.

One ``EndpointScraper`` per URL. Its routes say which ``model_name`` goes to which deployment and
pool; a route without a model name takes the endpoint's only model. Two models are never added
together: an endpoint that serves several models where a route names none is an error (the route
writes nothing and says which models it saw), and models that no route names are reported once
(log and ``opscale_ingest_scrape_unmatched_models``) and left out.

Each scrape of a route: read the model's previous reading from the shared ``ScrapeState`` (so any
replica continues where another stopped), derive samples (``opscale.scrape.derive_samples``), commit
the new reading (compare-and-set on its version) and only then push the samples through
``IngestApp.push`` — the same validation, deployment check and atomic write as a client's push. A
failed commit means another replica already covered this interval: nothing is written.

An unreachable or failing endpoint writes nothing, so its signals go stale (the decision loop holds
its last decision) rather than reading as zero load. Health per endpoint — last success, last error,
consecutive failures — is kept here, exported on the ingest ``/metrics`` and logged on the first
failure, every ``LOG_EVERY`` failures after that, and on recovery.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from opscale.clock import Clock
from opscale.config import ScrapeEngine, ScrapeRole
from opscale.errors import OpscaleError
from opscale.scrape import (
    Engine,
    EngineReading,
    ExpositionError,
    derive_samples,
    detect_engine,
    parse_exposition,
    read_models,
    state_from_json,
    state_to_json,
)
from opscale.services.ingest.app import IngestApp
from opscale.services.ingest.http_fetch import FetchError, http_get
from opscale.services.ingest.metrics import IngestMetrics
from opscale.services.ingest.shard import ScrapeState
from opscale.signals import SampleBatch
from opscale.spec import OperatorKind, PoolRef, Stage

log = logging.getLogger(__name__)

Fetch = Callable[[str, float], Awaitable[str]]
LOG_EVERY = 60
STAGES = {
    ScrapeRole.PREFILL: Stage.PREFILL,
    ScrapeRole.DECODE: Stage.DECODE,
    ScrapeRole.SERVING: Stage.SERVING,
}
ENGINES = {ScrapeEngine.VLLM: Engine.VLLM, ScrapeEngine.SGLANG: Engine.SGLANG}


@dataclass(frozen=True, slots=True)
class Route:
    deployment: str
    role: ScrapeRole
    model_name: str | None  # None: the endpoint's only model

    @property
    def pool(self) -> PoolRef:
        return PoolRef(stage=STAGES[self.role], operator=OperatorKind.MODEL)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    url: str
    engine: ScrapeEngine
    routes: tuple[Route, ...]
    interval_s: float
    timeout_s: float


@dataclass
class TargetHealth:
    last_attempt_s: float | None = None
    last_success_s: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    engine: Engine | None = None
    missing_metrics: tuple[str, ...] = ()


class RouteError(Exception):
    """One route of an endpoint cannot be served this time; the message says why."""


class EndpointScraper:
    def __init__(
        self,
        spec: EndpointSpec,
        app: IngestApp,
        clock: Clock,
        metrics: IngestMetrics,
        state: ScrapeState,
        *,
        max_gap_s: float,
        fetch: Fetch = http_get,
    ) -> None:
        self.spec = spec
        self.health = TargetHealth()
        self._app, self._clock, self._metrics, self._state = app, clock, metrics, state
        self._fetch = fetch
        self._max_gap_s = max_gap_s
        parts = urlsplit(spec.url)
        self._instance = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        self._unmatched_seen: set[str] = set()

    @property
    def key(self) -> str:
        return self.spec.url

    @property
    def interval_s(self) -> float:
        return self.spec.interval_s

    def _labels(self, route: Route) -> tuple[str, str, str]:
        return (self.spec.url, route.deployment, route.role.value)

    def _engine(self, found: Engine | None) -> Engine:
        named = ENGINES.get(self.spec.engine)
        if named is not None:
            return named
        if found is None:
            raise ExpositionError("no vLLM or SGLang serving metrics in the response")
        return found

    def _pick(self, route: Route, readings: dict[str, EngineReading]) -> EngineReading:
        if route.model_name is not None:
            if route.model_name not in readings:
                served = ", ".join(sorted(readings))
                raise RouteError(f"model {route.model_name!r} is not on {self.spec.url} (it serves {served})")
            return readings[route.model_name]
        if len(readings) > 1:
            raise RouteError(
                f"{self.spec.url} serves models {', '.join(sorted(readings))}; give deployment "
                f"{route.deployment!r} one with --model-name (their series are never added together)"
            )
        return next(iter(readings.values()))

    def _report_unmatched(self, readings: dict[str, EngineReading]) -> None:
        named = {r.model_name for r in self.spec.routes}
        if None in named:
            return
        for model in sorted(set(readings) - named - self._unmatched_seen):
            self._unmatched_seen.add(model)
            self._metrics.scrape_unmatched.labels(self.spec.url, model).set(1)
            log.warning(
                "%s serves model %r, which no scrape target maps to a deployment; its series are left out",
                self.spec.url,
                model,
                extra={"service": "ingest"},
            )

    async def scrape_once(self) -> bool:
        """One scrape; True if every route's samples (if any) were written or already covered."""
        at_s = self._clock.now()
        self.health.last_attempt_s = at_s
        try:
            text = await self._fetch(self.spec.url, self.spec.timeout_s)
            expo = parse_exposition(text)
            engine = self._engine(detect_engine(expo))
            readings = read_models(expo, engine, at_s)
        except (FetchError, ExpositionError) as exc:
            self._failed(self.spec.routes, str(exc))
            return False
        self._report_unmatched(readings)
        errors: list[str] = []
        failed: list[Route] = []
        missing: tuple[str, ...] = ()
        for route in self.spec.routes:
            try:
                reading = self._pick(route, readings)
                missing = reading.missing
                await self._scrape_route(route, reading)
            except (RouteError, OpscaleError) as exc:
                errors.append(str(exc))
                failed.append(route)
            else:
                self._succeeded(route, at_s)
        if errors:
            self._failed(tuple(failed), "; ".join(errors))
            return False
        self._recovered(engine, missing)
        return True

    async def _scrape_route(self, route: Route, reading: EngineReading) -> None:
        key = f"{self.spec.url}#{route.model_name or ''}"
        version, stored = await self._state.load(key)
        prev, carry = None, None
        if stored is not None:
            with contextlib.suppress(ValueError):  # another version's format: re-baseline
                prev, carry = state_from_json(stored)
        derived = derive_samples(
            prev,
            reading,
            deployment=route.deployment,
            pool=route.pool,
            instance=self._instance,
            max_gap_s=self._max_gap_s,
            carry=carry,
        )
        ttl_s = max(3600.0, 4 * self._max_gap_s)
        if not await self._state.commit(key, version, state_to_json(reading, derived.carry), ttl_s=ttl_s):
            return  # another replica scraped this target since our baseline, and wrote its samples
        labels = self._labels(route)
        for engine, kv in reading.kv_usage_by_engine:
            self._metrics.scrape_kv_usage.labels(self.spec.url, reading.model, engine).set(kv)
        if derived.counter_reset:
            self._metrics.counter_resets.labels(*labels).inc()
            log.info("%s: the engine restarted (counters from zero)", self.spec.url, extra=self._where(route))
        if derived.arrivals_from:  # says which way the arrival count was found
            self._metrics.scrape_arrivals_source.labels(*labels, derived.arrivals_from).set(1)
        if derived.samples:
            await self._app.push(SampleBatch(derived.samples), source="scrape")

    def _where(self, route: Route) -> dict[str, str]:
        return {"deployment": route.deployment, "service": "ingest"}

    def _failed(self, routes: tuple[Route, ...], error: str) -> None:
        h = self.health
        h.last_error = error
        h.consecutive_failures += 1
        for route in routes:
            labels = self._labels(route)
            self._metrics.scrape_up.labels(*labels).set(0)
            self._metrics.scrape_failures.labels(*labels).set(h.consecutive_failures)
            self._metrics.scrapes.labels(*labels, "error").inc()
        if h.consecutive_failures == 1 or h.consecutive_failures % LOG_EVERY == 0:
            log.warning(
                "scrape of %s failed (%d in a row): %s; its signals go stale",
                self.spec.url,
                h.consecutive_failures,
                error,
                extra={"deployment": ",".join(r.deployment for r in routes), "service": "ingest"},
            )

    def _succeeded(self, route: Route, at_s: float) -> None:
        labels = self._labels(route)
        self._metrics.scrape_up.labels(*labels).set(1)
        self._metrics.scrape_failures.labels(*labels).set(0)
        self._metrics.scrape_last_success.labels(*labels).set(at_s)
        self._metrics.scrapes.labels(*labels, "ok").inc()

    def _recovered(self, engine: Engine, missing: tuple[str, ...]) -> None:
        h = self.health
        if h.consecutive_failures:
            log.info(
                "scrape of %s recovered after %d failures",
                self.spec.url,
                h.consecutive_failures,
                extra={"service": "ingest"},
            )
        if missing != h.missing_metrics and missing:
            log.warning(
                "%s does not export %s", self.spec.url, ", ".join(missing), extra={"service": "ingest"}
            )
        h.last_success_s, h.consecutive_failures, h.engine, h.missing_metrics = (
            h.last_attempt_s,
            0,
            engine,
            missing,
        )
