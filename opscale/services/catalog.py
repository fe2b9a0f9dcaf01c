"""The control-plane services by name: how to build each and which setting holds its port."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from opscale.grpcutil.server import ServiceDef
from opscale.services.decision.wiring import build as build_decision
from opscale.services.ingest.wiring import build as build_ingest
from opscale.services.keda.wiring import build as build_keda
from opscale.services.placement.wiring import build as build_placement
from opscale.services.runtime import Runtime


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    name: str
    build: Callable[[Runtime], ServiceDef]
    port_setting: str


SERVICES: dict[str, ServiceEntry] = {
    "ingest": ServiceEntry("ingest", build_ingest, "ingest_port"),
    "decision": ServiceEntry("decision", build_decision, "decision_port"),
    "placement": ServiceEntry("placement", build_placement, "placement_port"),
    # KEDA's external scaler (Kubernetes): serves each pool's decided count to the HPA through KEDA.
    "keda": ServiceEntry("keda", build_keda, "keda_port"),
}
