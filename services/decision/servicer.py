"""DecisionService over gRPC: validate, convert, one call into the app, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.errors import InvalidArgument, Unimplemented
from services.common_convert import require_name
from services.decision.convert import deployment_to_pb, spec_from_pb
from services.decision.deployments import DeploymentsApp, page_size

Ctx = grpc.aio.ServicerContext

DEFAULT_ACTOR = "api"
_DECISIONS_PENDING = (
    "{rpc}: decisions are made by the decision engine (control loop, policies, explain, what-if), "
    "which this build does not include yet"
)


def _spec(request: pb.CreateDeploymentRequest | pb.UpdateDeploymentRequest) -> pb.DeploymentSpec:
    if not request.HasField("spec"):
        raise InvalidArgument("spec is required", field="spec")
    return request.spec


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, deployments: DeploymentsApp) -> None:
        self._deployments = deployments

    async def CreateDeployment(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.CreateDeploymentRequest, context: Ctx
    ) -> pb.CreateDeploymentResponse:
        spec = spec_from_pb(_spec(request))
        created = await self._deployments.create(spec, request.actor or DEFAULT_ACTOR)
        return pb.CreateDeploymentResponse(deployment=deployment_to_pb(created))

    async def UpdateDeployment(  # noqa: N802
        self, request: pb.UpdateDeploymentRequest, context: Ctx
    ) -> pb.UpdateDeploymentResponse:
        spec = spec_from_pb(_spec(request))
        updated = await self._deployments.update(spec, request.expected_version, request.actor or DEFAULT_ACTOR)
        return pb.UpdateDeploymentResponse(deployment=deployment_to_pb(updated))

    async def GetDeployment(  # noqa: N802
        self, request: pb.GetDeploymentRequest, context: Ctx
    ) -> pb.GetDeploymentResponse:
        name = require_name(request.name, "name")
        found = await self._deployments.get(name, request.version or None)
        return pb.GetDeploymentResponse(deployment=deployment_to_pb(found))

    async def ListDeployments(  # noqa: N802
        self, request: pb.ListDeploymentsRequest, context: Ctx
    ) -> pb.ListDeploymentsResponse:
        page = await self._deployments.list(page_size(request.page.page_size), request.page.page_token)
        return pb.ListDeploymentsResponse(
            deployments=[deployment_to_pb(d) for d in page.deployments], next_page_token=page.next_page_token
        )

    async def DeleteDeployment(  # noqa: N802
        self, request: pb.DeleteDeploymentRequest, context: Ctx
    ) -> pb.DeleteDeploymentResponse:
        name = require_name(request.name, "name")
        version = await self._deployments.delete(
            name, request.expected_version or None, request.actor or DEFAULT_ACTOR
        )
        return pb.DeleteDeploymentResponse(name=name, deleted_version=version)

    async def FreezeDeployment(  # noqa: N802
        self, request: pb.FreezeDeploymentRequest, context: Ctx
    ) -> pb.FreezeDeploymentResponse:
        name = require_name(request.name, "name")
        frozen = await self._deployments.set_frozen(name, True, request.actor or DEFAULT_ACTOR)
        return pb.FreezeDeploymentResponse(deployment=deployment_to_pb(frozen))

    async def UnfreezeDeployment(  # noqa: N802
        self, request: pb.UnfreezeDeploymentRequest, context: Ctx
    ) -> pb.UnfreezeDeploymentResponse:
        name = require_name(request.name, "name")
        thawed = await self._deployments.set_frozen(name, False, request.actor or DEFAULT_ACTOR)
        return pb.UnfreezeDeploymentResponse(deployment=deployment_to_pb(thawed))

    async def GetDecision(self, request: pb.GetDecisionRequest, context: Ctx) -> pb.GetDecisionResponse:  # noqa: N802
        raise Unimplemented(_DECISIONS_PENDING.format(rpc="GetDecision"))

    async def WatchDecisions(  # noqa: N802
        self, request: pb.WatchDecisionsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchDecisionsResponse]:
        raise Unimplemented(_DECISIONS_PENDING.format(rpc="WatchDecisions"))
        yield pb.WatchDecisionsResponse()  # pragma: no cover - makes this an async generator (server stream)

    async def ListDecisions(  # noqa: N802
        self, request: pb.ListDecisionsRequest, context: Ctx
    ) -> pb.ListDecisionsResponse:
        raise Unimplemented(_DECISIONS_PENDING.format(rpc="ListDecisions"))

    async def ExplainDecision(  # noqa: N802
        self, request: pb.ExplainDecisionRequest, context: Ctx
    ) -> pb.ExplainDecisionResponse:
        raise Unimplemented(_DECISIONS_PENDING.format(rpc="ExplainDecision"))

    async def WhatIf(self, request: pb.WhatIfRequest, context: Ctx) -> pb.WhatIfResponse:  # noqa: N802
        raise Unimplemented(_DECISIONS_PENDING.format(rpc="WhatIf"))
