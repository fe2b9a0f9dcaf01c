"""Builds the placement service (PlacementService + AgentService) from a runtime."""

from __future__ import annotations

import grpc

from opscale.api.agent.v1 import agent_pb2, agent_pb2_grpc
from opscale.api.placement.v1 import placement_pb2, placement_pb2_grpc
from opscale.grpcutil.server import ServiceDef
from services.placement.app import PlacementApp
from services.placement.servicer import AgentServicer, PlacementServicer
from services.runtime import Runtime

SERVICE_NAMES = (
    placement_pb2.DESCRIPTOR.services_by_name["PlacementService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)


def build(runtime: Runtime) -> ServiceDef:
    app = PlacementApp(runtime.sessions, runtime.clock)
    placement, agent = PlacementServicer(app), AgentServicer(app)

    def register(server: grpc.aio.Server) -> None:
        placement_pb2_grpc.add_PlacementServiceServicer_to_server(placement, server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)

    return ServiceDef(name="placement", service_names=SERVICE_NAMES, register=register)
