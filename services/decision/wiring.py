"""Builds the decision service from a runtime."""

from __future__ import annotations

import grpc

from opscale.api.decision.v1 import decision_pb2, decision_pb2_grpc
from opscale.grpcutil.server import ServiceDef
from services.decision.deployments import DeploymentsApp
from services.decision.servicer import DecisionServicer
from services.runtime import Runtime

SERVICE_NAME = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name


def build(runtime: Runtime) -> ServiceDef:
    servicer = DecisionServicer(DeploymentsApp(runtime.sessions, runtime.clock))

    def register(server: grpc.aio.Server) -> None:
        decision_pb2_grpc.add_DecisionServiceServicer_to_server(servicer, server)

    return ServiceDef(name="decision", service_names=(SERVICE_NAME,), register=register)
