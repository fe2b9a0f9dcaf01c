"""Handing desired counts to placement: a small port and its gRPC implementation.

The loop records a decision first (outcome PENDING), then hands it over with a short deadline, then
records the outcome: APPLIED (PARTIAL when placement reports infeasible pools) or FAILED with placement's
status and message (e.g. INVALID_ARGUMENT for counts it cannot take, UNAVAILABLE when it is down, a
deadline when it is slow). Nothing is silently dropped: the outcome is on the decision, visible in
GetDecision and ExplainDecision, and a FAILED hand-off is retried on the next tick.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc

from opscale.api.placement.v1 import placement_pb2, placement_pb2_grpc
from opscale.grpcutil.client import instrumented_channel
from opscale.policy.types import PoolKey, PoolPlan
from opscale.telemetry import Telemetry
from services.decision.pools import plans_to_pb

DEFAULT_DEADLINE_S = 1.0


class Outcome(enum.StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    PARTIAL = "partial"
    FAILED = "failed"
    NOT_NEEDED = "not_needed"


@dataclass(frozen=True, slots=True)
class Handoff:
    outcome: Outcome
    message: str = ""


class PlacementClient(Protocol):
    async def apply(
        self,
        deployment: str,
        spec_version: int,
        decision_id: str,
        desired: Mapping[PoolKey, PoolPlan],
        draining: Mapping[PoolKey, int],
    ) -> Handoff: ...

    async def close(self) -> None: ...


class GrpcPlacementClient:
    def __init__(
        self, target: str, deadline_s: float = DEFAULT_DEADLINE_S, *, telemetry: Telemetry | None = None
    ) -> None:
        self._target = target
        self._deadline_s = deadline_s
        self._telemetry = telemetry  # given: ApplyDesired continues the decision tick's trace
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> placement_pb2_grpc.PlacementServiceStub:
        if self._channel is None:
            self._channel = (
                instrumented_channel(self._target, self._telemetry)
                if self._telemetry is not None
                else grpc.aio.insecure_channel(self._target)
            )
        return placement_pb2_grpc.PlacementServiceStub(self._channel)

    async def apply(
        self,
        deployment: str,
        spec_version: int,
        decision_id: str,
        desired: Mapping[PoolKey, PoolPlan],
        draining: Mapping[PoolKey, int],
    ) -> Handoff:
        request = placement_pb2.ApplyDesiredRequest(
            deployment=deployment,
            spec_version=spec_version,
            decision_id=decision_id,
            pools=plans_to_pb(desired, draining),
        )
        try:
            reply = await self._stub().ApplyDesired(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            return Handoff(Outcome.FAILED, f"placement at {self._target} answered {code}: {exc.details()}")
        changes = (
            f"{reply.replicas_to_start} to start, {reply.replicas_to_drain} to drain, "
            f"{reply.replicas_unchanged} unchanged"
        )
        if reply.infeasible:
            why = "; ".join(i.reason for i in reply.infeasible)
            return Handoff(Outcome.PARTIAL, f"placement applied part: {changes}; infeasible: {why}")
        return Handoff(Outcome.APPLIED, f"placement applied: {changes}")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
