"""DecisionService over gRPC: validate, convert, one call into the app, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.decisions.explain import explain
from opscale.errors import InvalidArgument
from opscale.grpcutil.auth import audit_actor
from opscale.policy.registry import descriptor
from opscale.services.decision.decisions import DecisionsApp, decision_id
from opscale.services.decision.deployments import DeploymentsApp
from opscale.services.decision.whatif import HypotheticalLoad, WhatIfApp, check_load
from opscale.spec import PolicyKind
from opscale.wire.decisions import decision_to_pb, explanation_to_pb, whatif_to_pb
from opscale.wire.names import require_name
from opscale.wire.pages import cap_bytes, page_size
from opscale.wire.specs import deployment_to_pb, spec_from_pb

Ctx = grpc.aio.ServicerContext[Any, Any]


def _spec(request: pb.CreateDeploymentRequest | pb.UpdateDeploymentRequest) -> pb.DeploymentSpec:
    if not request.HasField("spec"):
        raise InvalidArgument("spec is required", field="spec")
    return request.spec


def _policy(name: str, field: str) -> PolicyKind:
    try:
        return PolicyKind(descriptor(name).name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc.message}", field=field) from None


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, deployments: DeploymentsApp, decisions: DecisionsApp, whatif: WhatIfApp) -> None:
        self._deployments = deployments
        self._decisions = decisions
        self._whatif = whatif

    async def CreateDeployment(
        self, request: pb.CreateDeploymentRequest, context: Ctx
    ) -> pb.CreateDeploymentResponse:
        spec = spec_from_pb(_spec(request))
        created = await self._deployments.create(spec, audit_actor(request.actor))
        return pb.CreateDeploymentResponse(deployment=deployment_to_pb(created))

    async def UpdateDeployment(
        self, request: pb.UpdateDeploymentRequest, context: Ctx
    ) -> pb.UpdateDeploymentResponse:
        spec = spec_from_pb(_spec(request))
        updated = await self._deployments.update(spec, request.expected_version, audit_actor(request.actor))
        return pb.UpdateDeploymentResponse(deployment=deployment_to_pb(updated))

    async def GetDeployment(self, request: pb.GetDeploymentRequest, context: Ctx) -> pb.GetDeploymentResponse:
        name = require_name(request.name, "name")
        found = await self._deployments.get(name, request.version or None)
        return pb.GetDeploymentResponse(deployment=deployment_to_pb(found))

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Ctx
    ) -> pb.ListDeploymentsResponse:
        page = await self._deployments.list(page_size(request.page.page_size, 100), request.page.page_token)
        msgs, token = cap_bytes(
            [deployment_to_pb(d) for d in page.deployments], lambda d: d.spec.name, page.next_page_token
        )
        return pb.ListDeploymentsResponse(deployments=msgs, next_page_token=token)

    async def DeleteDeployment(
        self, request: pb.DeleteDeploymentRequest, context: Ctx
    ) -> pb.DeleteDeploymentResponse:
        name = require_name(request.name, "name")
        version = await self._deployments.delete(
            name, request.expected_version or None, audit_actor(request.actor)
        )
        return pb.DeleteDeploymentResponse(name=name, deleted_version=version)

    async def FreezeDeployment(
        self, request: pb.FreezeDeploymentRequest, context: Ctx
    ) -> pb.FreezeDeploymentResponse:
        name = require_name(request.name, "name")
        frozen = await self._deployments.set_frozen(name, True, audit_actor(request.actor))
        return pb.FreezeDeploymentResponse(deployment=deployment_to_pb(frozen))

    async def UnfreezeDeployment(
        self, request: pb.UnfreezeDeploymentRequest, context: Ctx
    ) -> pb.UnfreezeDeploymentResponse:
        name = require_name(request.name, "name")
        thawed = await self._deployments.set_frozen(name, False, audit_actor(request.actor))
        return pb.UnfreezeDeploymentResponse(deployment=deployment_to_pb(thawed))

    async def GetDecision(self, request: pb.GetDecisionRequest, context: Ctx) -> pb.GetDecisionResponse:
        name = require_name(request.deployment, "deployment")
        return pb.GetDecisionResponse(decision=decision_to_pb(await self._decisions.latest(name)))

    async def WatchDecisions(
        self, request: pb.WatchDecisionsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchDecisionsResponse]:
        names = [require_name(n, f"deployments.{i}") for i, n in enumerate(request.deployments)]
        async for view in self._decisions.watch(names, request.include_current):
            yield pb.WatchDecisionsResponse(decision=decision_to_pb(view))

    async def ListDecisions(self, request: pb.ListDecisionsRequest, context: Ctx) -> pb.ListDecisionsResponse:
        name = require_name(request.deployment, "deployment")
        page = await self._decisions.history(name, request.page.page_size, request.page.page_token)
        msgs, token = cap_bytes(
            [decision_to_pb(v) for v in page.decisions], lambda d: d.id, page.next_page_token
        )
        return pb.ListDecisionsResponse(decisions=msgs, next_page_token=token)

    async def ExplainDecision(
        self, request: pb.ExplainDecisionRequest, context: Ctx
    ) -> pb.ExplainDecisionResponse:
        name = require_name(request.deployment, "deployment")
        wanted = decision_id(request.decision_id) if request.decision_id else None
        return explanation_to_pb(explain(await self._decisions.get(name, wanted)))

    async def WhatIf(self, request: pb.WhatIfRequest, context: Ctx) -> pb.WhatIfResponse:
        load = check_load(
            HypotheticalLoad(
                request.load.requests_per_s, request.load.input_tokens, request.load.output_tokens
            )
        )
        if request.deployment and request.HasField("spec"):
            raise InvalidArgument("give either deployment or spec, not both", field="deployment")
        if request.deployment:
            spec = await self._whatif.spec_of(require_name(request.deployment, "deployment"))
        elif request.HasField("spec"):
            spec = spec_from_pb(request.spec)
        else:
            raise InvalidArgument("deployment or spec is required", field="deployment")
        policies = [_policy(name, f"policy_names[{i}]") for i, name in enumerate(request.policy_names)]
        return pb.WhatIfResponse(plans=whatif_to_pb(await self._whatif.plans(spec, load, policies)))
