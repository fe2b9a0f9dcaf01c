"""Builds the placement service (PlacementService + AgentService) from a runtime."""

from __future__ import annotations

import asyncio
import socket
import uuid

import grpc

from opscale.api.agent.v1 import agent_pb2, agent_pb2_grpc
from opscale.api.placement.v1 import placement_pb2, placement_pb2_grpc
from opscale.grpcutil.server import ServiceDef
from opscale.services.placement.app import PlacementApp, PlacementConfig
from opscale.services.placement.leader import Leadership
from opscale.services.placement.metrics import placement_metrics
from opscale.services.placement.servicer import AgentServicer, PlacementServicer
from opscale.services.runtime import Runtime

SERVICE_NAMES = (
    placement_pb2.DESCRIPTOR.services_by_name["PlacementService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)


def config_from(runtime: Runtime) -> PlacementConfig:
    s = runtime.settings
    return PlacementConfig(
        heartbeat_interval_s=s.heartbeat_interval_s,
        lost_timeout_s=s.lost_timeout_s,
        reconcile_interval_s=s.reconcile_interval_s,
        command_resend_s=s.command_resend_s,
        drain_grace_s=s.drain_grace_s,
        stop_grace_s=s.stop_grace_s,
        agent_reconnect_max_s=s.agent_reconnect_max_s,
    )


def build(runtime: Runtime) -> ServiceDef:
    s = runtime.settings
    holder = s.placement_advertise_address or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    leadership = Leadership(
        runtime.lease(holder, "placement"),
        runtime.sessions,
        runtime.clock,
        address=s.placement_advertise_address,
        renew_s=s.placement_lease_renew_s,
    )
    app = PlacementApp(
        runtime.sessions,
        runtime.clock,
        config_from(runtime),
        tracer=runtime.telemetry.tracer("opscale.placement"),
        metrics=placement_metrics(runtime.telemetry.registry),
        leadership=leadership,
    )
    definition = build_for(app)
    definition.checks.update(runtime.checks(counters=False))  # placement keeps no counters
    return definition


def build_for(app: PlacementApp) -> ServiceDef:
    placement, agent = PlacementServicer(app), AgentServicer(app)

    def register(server: grpc.aio.Server) -> None:
        placement_pb2_grpc.add_PlacementServiceServicer_to_server(placement, server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)

    async def reconcile(stopping: asyncio.Event) -> None:
        await app.reconciler.run(stopping, app.config.reconcile_interval_s, active=app.is_leader)

    async def flush(stopping: asyncio.Event) -> None:
        await app.reconciler.run_heartbeat_flush(
            stopping, app.config.heartbeat_interval_s, active=app.is_leader
        )

    definition = ServiceDef(
        name="placement", service_names=SERVICE_NAMES, register=register, on_stopping=[app.registry.close_all]
    )
    definition.background.extend([reconcile, flush])
    leadership = app.leadership
    if leadership is not None:

        async def lead(stopping: asyncio.Event) -> None:
            await leadership.run(stopping, app.gained_leadership, app.lost_leadership)

        definition.background.append(lead)
    return definition
