"""Builds the metrics-ingest service from a runtime: the gRPC servicer and the scrapers (engine
endpoints and Prometheus sources), run by one ``ScrapeManager`` as a background task of the service.

Scrape state and membership live in the counter store's Redis (same client and key prefix) when the
counters are in Redis — several ingest replicas then split the targets — and in process otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc

from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opscale.config import ScrapeTarget
from opscale.counters import RedisCounterStore
from opscale.grpcutil.server import BackgroundTask, Check, ServiceDef
from opscale.services.ingest.app import IngestApp
from opscale.services.ingest.deployments import DeploymentDirectory
from opscale.services.ingest.http_fetch import http_get
from opscale.services.ingest.metrics import IngestMetrics
from opscale.services.ingest.prometheus import PrometheusScraper
from opscale.services.ingest.scrape import EndpointScraper, Fetch
from opscale.services.ingest.scrapers import Membership, ScrapeManager, Scraper
from opscale.services.ingest.servicer import IngestServicer
from opscale.services.ingest.shard import MemoryScrapeState, RedisScrapeState, ScrapeState
from opscale.services.ingest.targets import TargetsFile, group_targets
from opscale.services.runtime import Runtime
from opscale.signals import layouts_match

log = logging.getLogger(__name__)

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def build_app(runtime: Runtime) -> IngestApp:
    if not layouts_match(runtime.counters.settings):
        # Not fatal: reads and writes agree whatever the bins; only percentile resolution suffers.
        log.warning(
            "the counter store does not use opscale.signals' histogram layouts; build it with "
            "settings=opscale.signals.store_settings() for the intended TTFT/TBT/length resolution",
            extra={"service": "ingest"},
        )
    return IngestApp(
        runtime.counters,
        DeploymentDirectory(runtime.sessions, runtime.clock),
        runtime.clock,
        IngestMetrics.of(runtime.telemetry.registry),
    )


def scrape_state_for(runtime: Runtime) -> ScrapeState:
    counters = runtime.counters
    if isinstance(counters, RedisCounterStore):
        return RedisScrapeState(counters.client, counters.prefix)
    return MemoryScrapeState()


@dataclass
class Ingest:
    """The service's parts, so tests can drive the scrapers one scrape at a time."""

    app: IngestApp
    servicer: IngestServicer
    manager: ScrapeManager
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def loops(self) -> list[Scraper]:
        return list(self.manager.scrapers.values())

    def service(self, *, run_loops: bool = True) -> ServiceDef:
        def register(server: grpc.aio.Server) -> None:
            ingest_pb2_grpc.add_IngestServiceServicer_to_server(self.servicer, server)

        background: list[BackgroundTask] = [self.manager.run] if run_loops else []
        return ServiceDef(
            name="ingest",
            service_names=(SERVICE_NAME,),
            register=register,
            background=background,
            # Their converter and opscale.signals' validation check every field they read in one pass.
            fast_paths=frozenset({"PushSamples", "StreamSamples"}),
            checks=self.checks,
        )


def assemble(
    runtime: Runtime, *, state: ScrapeState | None = None, member: str | None = None, fetch: Fetch = http_get
) -> Ingest:
    """``state`` and ``member`` let tests run several replicas against one store."""
    app = build_app(runtime)
    s = runtime.settings
    state = state if state is not None else scrape_state_for(runtime)
    clock, metrics = runtime.clock, app.metrics

    def endpoints(targets: list[ScrapeTarget]) -> list[Scraper]:
        return [
            EndpointScraper(spec, app, clock, metrics, state, max_gap_s=s.scrape_max_gap_s, fetch=fetch)
            for spec in group_targets(targets, s.scrape_interval_s)
        ]

    sources: list[Scraper] = [
        PrometheusScraper(
            src,
            s.prometheus_url or "",
            app,
            clock,
            metrics,
            state,
            interval_s=src.interval_s or s.scrape_interval_s,
            max_gap_s=s.scrape_max_gap_s,
            fetch=fetch,
        )
        for src in s.prometheus_sources
    ]
    intervals = [s.scrape_interval_s, *(t.interval_s for t in s.scrape_targets if t.interval_s)]
    sharded = not isinstance(state, MemoryScrapeState)
    membership = Membership(state, clock, interval_s=min(intervals), sharded=sharded, member=member)
    manager = ScrapeManager(
        membership,
        clock,
        endpoints,
        static_targets=s.scrape_targets,
        extra=sources,
        targets_file=TargetsFile(s.scrape_targets_file) if s.scrape_targets_file else None,
        default_interval_s=s.scrape_interval_s,
    )
    return Ingest(app, IngestServicer(app), manager, runtime.checks())


def build(runtime: Runtime) -> ServiceDef:
    return assemble(runtime).service()
