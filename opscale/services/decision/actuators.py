"""The decision loop's actuators (``opscale.actuation.Actuator``): how a recorded decision is handed on.

The loop records a decision first (outcome PENDING), then hands its resizes to the actuator under a short
deadline, then records the outcome. Nothing is silently dropped: the outcome is on the decision, visible
in GetDecision and ExplainDecision, and a FAILED hand-off is retried on the next tick.

* ``NodeAgentActuator`` (``actuator: agents``, bare metal): ``ApplyDesired`` to placement, which places
  replicas on GPUs and commands the node agents. APPLIED (PARTIAL when placement reports infeasible
  pools) or FAILED with placement's status and message (INVALID_ARGUMENT for counts it cannot take,
  UNAVAILABLE when it is down, a deadline when it is slow).
* ``KedaActuator`` (``actuator: keda``, Kubernetes): nothing to push. The recorded decision *is* the
  hand-off: the KEDA external scaler (``opscale serve keda``) serves each pool's count to the HPA.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from opscale.actuation import Actuation, Actuator, Outcome, ResizePool
from opscale.api.placement.v1 import placement_pb2, placement_pb2_grpc
from opscale.config import Settings
from opscale.grpcutil.client import PLAINTEXT, ClientSecurity, instrumented_channel
from opscale.telemetry import Telemetry
from opscale.wire.commands import resizes_to_pb
from opscale.wire.pools import pool_label

DEFAULT_DEADLINE_S = 1.0


class NodeAgentActuator:
    def __init__(
        self,
        target: str,
        deadline_s: float = DEFAULT_DEADLINE_S,
        *,
        telemetry: Telemetry | None = None,
        security: ClientSecurity = PLAINTEXT,
    ) -> None:
        self._target = target
        self._deadline_s = deadline_s
        self._telemetry = telemetry  # given: ApplyDesired continues the decision tick's trace
        self._security = security  # the service's certificate (admin) or token: ApplyDesired is admin's
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> placement_pb2_grpc.PlacementServiceStub:
        if self._channel is None:
            self._channel = instrumented_channel(self._target, self._telemetry, security=self._security)
        return placement_pb2_grpc.PlacementServiceStub(self._channel)

    async def actuate(
        self, deployment: str, spec_version: int, decision_id: str, resize: Sequence[ResizePool]
    ) -> Actuation:
        request = placement_pb2.ApplyDesiredRequest(
            deployment=deployment,
            spec_version=spec_version,
            decision_id=decision_id,
            pools=resizes_to_pb(resize),
        )
        try:
            reply = await self._stub().ApplyDesired(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            return Actuation(Outcome.FAILED, f"placement at {self._target} answered {code}: {exc.details()}")
        changes = (
            f"{reply.replicas_to_start} to start, {reply.replicas_to_drain} to drain, "
            f"{reply.replicas_unchanged} unchanged"
        )
        if reply.infeasible:
            short = "; ".join(
                f"{pool_label(i.pool)} placed {i.satisfiable} of {i.requested}: {i.reason}"
                for i in reply.infeasible
            )
            return Actuation(Outcome.PARTIAL, f"{short} ({changes})")
        return Actuation(Outcome.APPLIED, f"placement applied: {changes}")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


class KedaActuator:
    async def actuate(
        self, deployment: str, spec_version: int, decision_id: str, resize: Sequence[ResizePool]
    ) -> Actuation:
        counts = ", ".join(f"{r.pool} {r.replicas}" for r in resize) or "no pools"
        return Actuation(Outcome.APPLIED, f"served to KEDA's external scaler for the HPA to apply: {counts}")

    async def close(self) -> None:
        return None


def make_actuator(settings: Settings, telemetry: Telemetry | None) -> Actuator:
    if settings.actuator == "keda":
        return KedaActuator()
    return NodeAgentActuator(
        settings.address_of("placement"), telemetry=telemetry, security=ClientSecurity.of(settings)
    )
