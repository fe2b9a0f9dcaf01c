"""PlacementService and AgentService over gRPC: validate, convert, one call into the app, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from opscale.api.agent.v1 import agent_pb2, agent_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.status import NodeStatus
from opscale.errors import InvalidArgument
from services.common_convert import require_name
from services.placement.app import PlacementApp
from services.placement.convert import gpu_to_pb, node_to_pb

Ctx = grpc.aio.ServicerContext[Any, Any]
DEFAULT_ACTOR = "api"
MAX_PAGE_SIZE = 1000


class PlacementServicer(placement_pb2_grpc.PlacementServiceServicer):
    def __init__(self, app: PlacementApp) -> None:
        self._app = app

    async def ListNodes(self, request: pb.ListNodesRequest, context: Ctx) -> pb.ListNodesResponse:
        size = request.page.page_size or 100
        if size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page.page_size must be at most {MAX_PAGE_SIZE}, got {size}", field="page")
        token = request.page.page_token
        nodes = [n for n in await self._app.list_nodes() if not token or n.name > token]
        chosen = nodes[:size]
        next_token = chosen[-1].name if len(nodes) > size else ""
        return pb.ListNodesResponse(nodes=[node_to_pb(n) for n in chosen], next_page_token=next_token)

    async def GetNode(self, request: pb.GetNodeRequest, context: Ctx) -> pb.GetNodeResponse:
        return pb.GetNodeResponse(
            node=node_to_pb(await self._app.get_node(require_name(request.name, "name")))
        )

    async def ListGpus(self, request: pb.ListGpusRequest, context: Ctx) -> pb.ListGpusResponse:
        gpus = await self._app.list_gpus(request.node, request.gpu_type)
        return pb.ListGpusResponse(gpus=[gpu_to_pb(node, gpu) for node, gpu in gpus])

    async def CordonNode(self, request: pb.CordonNodeRequest, context: Ctx) -> pb.CordonNodeResponse:
        node = await self._app.set_status(
            require_name(request.name, "name"),
            NodeStatus.CORDONED,
            request.expected_version or None,
            request.actor or DEFAULT_ACTOR,
        )
        return pb.CordonNodeResponse(node=node_to_pb(node))

    async def UncordonNode(self, request: pb.UncordonNodeRequest, context: Ctx) -> pb.UncordonNodeResponse:
        node = await self._app.set_status(
            require_name(request.name, "name"),
            NodeStatus.READY,
            request.expected_version or None,
            request.actor or DEFAULT_ACTOR,
        )
        return pb.UncordonNodeResponse(node=node_to_pb(node))

    async def DrainNode(self, request: pb.DrainNodeRequest, context: Ctx) -> pb.DrainNodeResponse:
        raise self._app.pending("DrainNode")

    async def GetReplicas(self, request: pb.GetReplicasRequest, context: Ctx) -> pb.GetReplicasResponse:
        raise self._app.pending("GetReplicas")

    async def ApplyDesired(self, request: pb.ApplyDesiredRequest, context: Ctx) -> pb.ApplyDesiredResponse:
        raise self._app.pending("ApplyDesired")


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, app: PlacementApp) -> None:
        self._app = app

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.ConnectRequest], context: Ctx
    ) -> AsyncIterator[agent_pb2.ConnectResponse]:
        raise self._app.pending("Connect")
        yield agent_pb2.ConnectResponse()  # pragma: no cover - makes this an async generator (bidi stream)
