"""Builds the metrics-ingest service from a runtime."""

from __future__ import annotations

import grpc

from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opscale.grpcutil.server import ServiceDef
from services.ingest.app import IngestApp
from services.ingest.servicer import IngestServicer
from services.runtime import Runtime

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def build(runtime: Runtime) -> ServiceDef:
    servicer = IngestServicer(IngestApp(runtime.counters))

    def register(server: grpc.aio.Server) -> None:
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)

    return ServiceDef(name="ingest", service_names=(SERVICE_NAME,), register=register)
