"""Builds the decision service from a runtime: the RPCs, the control loop and the ledger tail."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import grpc

from opscale.actuation import Actuator
from opscale.api.decision.v1 import decision_pb2, decision_pb2_grpc
from opscale.grpcutil.server import ServiceDef
from opscale.services.decision.actuators import make_actuator
from opscale.services.decision.decisions import DecisionsApp
from opscale.services.decision.deployments import DeploymentsApp
from opscale.services.decision.lease import Lease, make_lease
from opscale.services.decision.loop import DecisionLoop, LoopOptions, Pace
from opscale.services.decision.metrics import loop_metrics
from opscale.services.decision.planning import PlanningPool
from opscale.services.decision.publish import DecisionHub, LedgerTail
from opscale.services.decision.servicer import DecisionServicer
from opscale.services.decision.whatif import WhatIfApp
from opscale.services.runtime import Runtime

SERVICE_NAME = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name


def replica_id() -> str:
    """Names this decision replica in decisions (``leader_id``) and logs: host, pid and a random suffix
    (a restarted process with a recycled pid is still another replica)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class DecisionService:
    definition: ServiceDef
    loop: DecisionLoop
    hub: DecisionHub
    tail: LedgerTail
    lease: Lease


def build_service(
    runtime: Runtime,
    *,
    options: LoopOptions | None = None,
    actuator: Actuator | None = None,
    lease: Lease | None = None,
    pace: Pace | None = None,
    tail_poll_s: float = 0.2,
) -> DecisionService:
    """``pace`` is how the background loops wait between passes (default: the runtime clock's sleep);
    tests pass a real short sleep and move a virtual clock themselves."""
    options = options or LoopOptions(replica_id=replica_id())
    lease = lease or make_lease(
        runtime.engine,
        runtime.settings.database_url,
        options.replica_id,
        ttl_s=runtime.settings.lease_ttl_s,
    )
    hub = DecisionHub()
    pace = pace or runtime.clock.sleep
    loop = DecisionLoop(
        sessions=runtime.sessions,
        read_sessions=runtime.read_sessions,
        counters=runtime.counters,
        clock=runtime.clock,
        lease=lease,
        actuator=actuator or make_actuator(runtime.settings, runtime.telemetry),
        hub=hub,
        tracer=runtime.telemetry.tracer("opscale.decision"),
        metrics=loop_metrics(runtime.telemetry.registry),
        options=options,
        pace=pace,
    )
    tail = LedgerTail(runtime.read_sessions, hub, pace, tail_poll_s)
    planning = PlanningPool(runtime.settings.whatif_workers, runtime.settings.whatif_cpu_budget_s)
    servicer = DecisionServicer(
        DeploymentsApp(runtime.sessions, runtime.clock),
        DecisionsApp(runtime.sessions, runtime.clock, hub),
        WhatIfApp(runtime.sessions, runtime.clock, planning),
    )

    def register(server: grpc.aio.Server) -> None:
        decision_pb2_grpc.add_DecisionServiceServicer_to_server(servicer, server)

    definition = ServiceDef(
        name="decision",
        service_names=(SERVICE_NAME,),
        register=register,
        background=[loop.run, tail.run],
        on_stop=[planning.close],
        on_stopping=[hub.close],
        checks=runtime.checks(),
    )
    return DecisionService(definition, loop, hub, tail, lease)


def build(runtime: Runtime) -> ServiceDef:
    return build_service(runtime).definition
