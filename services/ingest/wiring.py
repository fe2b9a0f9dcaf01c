"""Builds the metrics-ingest service from a runtime: the gRPC servicer and one scrape loop per
configured target (background tasks of the service)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opscale.grpcutil.server import BackgroundTask, ServiceDef
from opscale.signals import layouts_match
from services.ingest.app import IngestApp
from services.ingest.deployments import DeploymentDirectory
from services.ingest.metrics import IngestMetrics
from services.ingest.scrape import ScrapeLoop, build_loops
from services.ingest.servicer import IngestServicer
from services.runtime import Runtime

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


@dataclass
class Ingest:
    """The service's parts, so tests can drive the scrape loops one scrape at a time."""

    app: IngestApp
    servicer: IngestServicer
    loops: list[ScrapeLoop]

    def service(self, *, run_loops: bool = True) -> ServiceDef:
        def register(server: grpc.aio.Server) -> None:
            ingest_pb2_grpc.add_IngestServiceServicer_to_server(self.servicer, server)

        background: list[BackgroundTask] = [loop.run for loop in self.loops] if run_loops else []
        return ServiceDef(
            name="ingest",
            service_names=(SERVICE_NAME,),
            register=register,
            background=background,
            # Their converter and opscale.signals' validation check every field they read in one pass.
            fast_paths=frozenset({"PushSamples", "StreamSamples"}),
        )


def assemble(runtime: Runtime) -> Ingest:
    app = build_app(runtime)
    settings = runtime.settings
    loops = build_loops(settings.scrape_targets, settings.scrape_interval_s, app, runtime.clock, app.metrics)
    return Ingest(app, IngestServicer(app), loops)


def build(runtime: Runtime) -> ServiceDef:
    return assemble(runtime).service()
