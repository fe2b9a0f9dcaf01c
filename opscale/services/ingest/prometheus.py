"""Reading a deployment's engine signals from a Prometheus server (PromQL) instead of scraping the
engines: for users who already run Prometheus next to vLLM/SGLang.

Every ``interval_s``, for the time Δ since the last committed read, one instant query per signal at
the read time t, over the same metric names as scraping (``opscale.scrape.NAMES``), restricted by
the source's label ``selector``:

- gauges: ``sum(running)``, ``sum(waiting)``, ``max by (<engine label>) (kv_usage)``;
- counters: ``sum(increase(<counter>[Δ]))`` (Prometheus handles counter resets, as ``rate`` does);
- histograms: ``sum by (le) (increase(<name>_bucket[Δ]))`` and ``sum(increase(<name>_sum[Δ]))`` —
  the same bucket deltas a direct scrape sees, so percentiles follow ``histogram_quantile``'s linear
  interpolation and means come from the sums (``opscale.scrape.spread``).

These become two readings — zero counters at the previous read, the increases now — and go through
``derive_samples``, so every signal is derived exactly as for a scraped endpoint (arrivals by
conservation for vLLM need the queue at the previous read, kept in the shared state). ``increase``
extrapolates to the window edges from the samples Prometheus has, so counts are not whole numbers
and agree with direct scraping to within a few percent over windows of many Prometheus scrapes.

The previous read (time and queue) is kept in the shared ``ScrapeState`` with the same
compare-and-set as endpoint scrapes: replicas that read one source write its samples once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from opscale.clock import Clock
from opscale.config import PrometheusSource
from opscale.errors import OpscaleError
from opscale.scrape import NAMES, EngineReading, HistogramValue, derive_samples
from opscale.scrape.engines import COUNTER_FIELDS, HISTOGRAM_FIELDS, MODEL_LABEL, Sel
from opscale.services.ingest.app import IngestApp
from opscale.services.ingest.http_fetch import FetchError, http_get
from opscale.services.ingest.metrics import IngestMetrics
from opscale.services.ingest.scrape import ENGINES, LOG_EVERY, Fetch, Route, TargetHealth
from opscale.services.ingest.shard import ScrapeState
from opscale.signals import SampleBatch

log = logging.getLogger(__name__)


class QueryError(Exception):
    """Prometheus refused a query or answered something that is not a query result."""


def _matchers(selector: str, sel: Sel) -> str:
    inner = selector.strip()[1:-1].strip()
    extra = [f'{k}="{v}"' for k, v in sel.where]
    return "{" + ",".join([*([inner] if inner else []), *extra]) + "}"


class PrometheusScraper:
    def __init__(
        self,
        source: PrometheusSource,
        prometheus_url: str,
        app: IngestApp,
        clock: Clock,
        metrics: IngestMetrics,
        state: ScrapeState,
        *,
        interval_s: float,
        max_gap_s: float,
        fetch: Fetch = http_get,
        timeout_s: float = 5.0,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.health = TargetHealth()
        self._base = prometheus_url.rstrip("/")
        self._app, self._clock, self._metrics, self._state = app, clock, metrics, state
        self._fetch, self._timeout_s, self._max_gap_s = fetch, timeout_s, max_gap_s
        self._engine = ENGINES[source.engine]
        self._names = NAMES[self._engine]
        self._route = Route(source.deployment, source.role, None)

    @property
    def key(self) -> str:
        s = self.source
        return f"prometheus:{self._base}:{s.deployment}:{s.role.value}:{s.selector}"

    async def _query(self, promql: str, at_s: float) -> list[tuple[dict[str, str], float]]:
        url = f"{self._base}/api/v1/query?{urlencode({'query': promql, 'time': f'{at_s:.3f}'})}"
        try:
            body: Any = json.loads(await self._fetch(url, self._timeout_s))
            if body.get("status") != "success":
                raise QueryError(f"Prometheus refused {promql!r}: {body.get('error', body)}")
            result = body["data"]["result"]
            return [(dict(r["metric"]), float(r["value"][1])) for r in result]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise QueryError(f"not a Prometheus query result for {promql!r}: {exc}") from None

    async def _first(
        self, template: str, sels: Iterable[Sel], at_s: float
    ) -> list[tuple[dict[str, str], float]]:
        """The result of the first selector (newest name first) that has series."""
        for sel in sels:
            found = await self._query(
                template.format(m=sel.name + _matchers(self.source.selector, sel)), at_s
            )
            if found:
                return found
        return []

    async def _scalar(self, template: str, sels: Iterable[Sel], at_s: float) -> float | None:
        found = await self._first(template, sels, at_s)
        values = [v for _, v in found if math.isfinite(v)]
        return sum(values) if values else None

    async def _histogram(self, names: tuple[str, ...], window: str, at_s: float) -> HistogramValue | None:
        for name in names:
            m = _matchers(self.source.selector, Sel(name))
            buckets = await self._query(f"sum by (le) (increase({name}_bucket{m}[{window}]))", at_s)
            if not buckets:
                continue
            total = await self._query(f"sum(increase({name}_sum{m}[{window}]))", at_s)
            cum = sorted((float(labels.get("le", "nan")), v) for labels, v in buckets)
            cum = [(le, max(0.0, v)) for le, v in cum if not math.isnan(le)]
            if not cum or not math.isinf(cum[-1][0]):
                continue
            return HistogramValue(tuple(cum), total[0][1] if total else math.nan, cum[-1][1])
        return None

    async def _gauges(self, at_s: float) -> tuple[float | None, float | None, dict[str, float]]:
        n = self._names
        by_model, waiting, kv = await asyncio.gather(
            self._first(f"sum by ({MODEL_LABEL}) ({{m}})", n.running, at_s),
            self._scalar("sum({m})", n.waiting, at_s),
            self._first(f"max by ({n.engine_label}) ({{m}})", n.kv_usage, at_s),
        )
        models = sorted(labels.get(MODEL_LABEL, "") for labels, _ in by_model)
        if len(models) > 1:  # never add two models together
            raise QueryError(
                f"the selector {self.source.selector} matches models {', '.join(models)}; add "
                f'{MODEL_LABEL}="…" to it for deployment {self.source.deployment!r}'
            )
        running = sum(v for _, v in by_model) if by_model else None
        return running, waiting, {labels.get(n.engine_label, "0"): v for labels, v in kv}

    def _reading(
        self,
        at_s: float,
        running: float | None,
        waiting: float | None,
        kv: dict[str, float],
        counters: Mapping[str, float | None],
        hists: Mapping[str, HistogramValue | None],
    ) -> EngineReading:
        return EngineReading(
            engine=self._engine,
            at_s=at_s,
            model="",
            engines=max(1, len(kv)),
            running=running,
            waiting=waiting,
            kv_usage=max(kv.values()) if kv else None,
            kv_usage_by_engine=tuple(sorted(kv.items())),
            **counters,  # type: ignore[arg-type]
            **hists,  # type: ignore[arg-type]
            process_start_s=None,
            created=(),
            missing=(),
        )

    async def scrape_once(self) -> bool:
        at_s = self._clock.now()
        self.health.last_attempt_s = at_s
        try:
            version, stored = await self._state.load(self.key)
            prev_read = json.loads(stored) if stored else None
            running, waiting, kv = await self._gauges(at_s)
            now = self._reading(
                at_s,
                running,
                waiting,
                kv,
                dict.fromkeys(COUNTER_FIELDS, 0.0),
                dict.fromkeys(HISTOGRAM_FIELDS),
            )
            prev = None
            if prev_read is not None and 0 < at_s - prev_read["t"] <= self._max_gap_s:
                window = f"{max(1, round((at_s - prev_read['t']) * 1000))}ms"
                now = await self._increases(at_s, window, running, waiting, kv)
                zero = {c: 0.0 for c in COUNTER_FIELDS}
                hists = {h: _zero(getattr(now, h)) for h in HISTOGRAM_FIELDS}
                prev = self._reading(
                    prev_read["t"], prev_read["running"], prev_read["waiting"], {}, zero, hists
                )
            derived = derive_samples(
                prev,
                now,
                deployment=self.source.deployment,
                pool=self._route.pool,
                instance="prometheus",
                max_gap_s=self._max_gap_s,
            )
            record = json.dumps({"t": at_s, "running": running, "waiting": waiting})
            ttl_s = max(3600.0, 4 * self._max_gap_s)
            # A failed commit: another replica read this source since our baseline and wrote it.
            if await self._state.commit(self.key, version, record, ttl_s=ttl_s) and derived.samples:
                await self._app.push(SampleBatch(derived.samples), source="prometheus")
        except (FetchError, QueryError, OpscaleError, ValueError) as exc:
            h = self.health
            h.last_error, h.consecutive_failures = str(exc), h.consecutive_failures + 1
            if h.consecutive_failures == 1 or h.consecutive_failures % LOG_EVERY == 0:
                log.warning(
                    "reading %s from Prometheus failed (%d in a row): %s; its signals go stale",
                    self.source.deployment,
                    h.consecutive_failures,
                    exc,
                    extra={"deployment": self.source.deployment, "service": "ingest"},
                )
            return False
        self.health.last_success_s, self.health.consecutive_failures = at_s, 0
        return True

    async def _increases(
        self, at_s: float, window: str, running: float | None, waiting: float | None, kv: dict[str, float]
    ) -> EngineReading:
        n = self._names
        names = list(COUNTER_FIELDS)
        values = await asyncio.gather(
            *(self._scalar(f"sum(increase({{m}}[{window}]))", getattr(n, c), at_s) for c in names)
        )
        hist_names = list(HISTOGRAM_FIELDS)
        hists = await asyncio.gather(
            *(self._histogram(getattr(n, HISTOGRAM_FIELDS[h]), window, at_s) for h in hist_names)
        )
        counters = dict(zip(names, values, strict=True))
        return self._reading(at_s, running, waiting, kv, counters, dict(zip(hist_names, hists, strict=True)))


def _zero(h: HistogramValue | None) -> HistogramValue | None:
    return None if h is None else HistogramValue(tuple((le, 0.0) for le, _ in h.buckets), 0.0, 0.0)
