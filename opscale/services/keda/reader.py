"""``DecisionReader`` over gRPC: the decision service's GetDecision and WatchDecisions, read through
``opscale.wire`` like any other client of the decision API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.errors import FailedPrecondition, NotFound, Unavailable
from opscale.pools import PoolKey
from opscale.wire.pools import pool_from_pb

DEADLINE_S = 2.0


def counts_of(pools: list[cpb.PoolPlan]) -> dict[PoolKey, int]:
    return {pool_from_pb(p.pool, "decision.pools"): p.replicas for p in pools}


class GrpcDecisionReader:
    def __init__(self, channel: grpc.aio.Channel, target: str) -> None:
        self._stub = decision_pb2_grpc.DecisionServiceStub(channel)
        self._target = target

    async def current(self, deployment: str) -> dict[PoolKey, int]:
        try:
            reply = await self._stub.GetDecision(
                dpb.GetDecisionRequest(deployment=deployment), timeout=DEADLINE_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(
                    f"opscale has no deployment {deployment!r} (scalerMetadata.deployment)",
                    field="deployment",
                ) from None
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(str(exc.details()), field="deployment") from None
            raise Unavailable(
                f"the decision service at {self._target} answered {exc.code().name}: {exc.details()}"
            ) from None
        return counts_of(list(reply.decision.pools))

    async def watch(self) -> AsyncIterator[tuple[str, dict[PoolKey, int]]]:
        stream = self._stub.WatchDecisions(dpb.WatchDecisionsRequest(include_current=True))
        async for reply in stream:
            yield reply.decision.deployment, counts_of(list(reply.decision.pools))
