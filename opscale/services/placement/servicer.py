"""PlacementService and AgentService over gRPC: validate, convert, one call into the app, convert back."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc

from opscale.api.agent.v1 import agent_pb2, agent_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.records import GpuRecord, ReplicaRecord
from opscale.db.status import NodeStatus
from opscale.errors import InvalidArgument
from opscale.grpcutil.auth import audit_actor, require_node
from opscale.services.placement.app import PlacementApp
from opscale.services.placement.convert import (
    gpu_to_pb,
    infeasible_to_pb,
    node_to_pb,
    replica_to_pb,
    shortfall_to_pb,
)
from opscale.services.placement.leader import LEADER_METADATA
from opscale.services.placement.sessions import AgentSession
from opscale.wire.commands import resizes_from_pb
from opscale.wire.names import require_name
from opscale.wire.pages import MAX_PAGE_SIZE, cap_bytes, page_size, take_page

Ctx = grpc.aio.ServicerContext[Any, Any]
SAFETY_POLL_S = 30.0
#: How long an agent that connects while this replica starts waits for it to know whether it leads.
FIRST_RENEWAL_WAIT_S = 5.0


def _name(item: Any) -> str:
    return str(item.name)


def _gpu_key(item: tuple[str, GpuRecord]) -> str:
    # Node names are at most 255 characters and indices small: zero-padding keeps key order = list order.
    return f"{item[0]}/{item[1].index:06d}"


def _replica_key(item: tuple[ReplicaRecord, Any]) -> str:
    return item[0].id


class PlacementServicer(placement_pb2_grpc.PlacementServiceServicer):
    def __init__(self, app: PlacementApp) -> None:
        self._app = app

    async def ListNodes(self, request: pb.ListNodesRequest, context: Ctx) -> pb.ListNodesResponse:
        size = page_size(request.page.page_size, 100)
        nodes, token = take_page(await self._app.list_nodes(), _name, size, request.page.page_token)
        msgs, token = cap_bytes([node_to_pb(n) for n in nodes], _name, token)
        return pb.ListNodesResponse(nodes=msgs, next_page_token=token)

    async def GetNode(self, request: pb.GetNodeRequest, context: Ctx) -> pb.GetNodeResponse:
        return pb.GetNodeResponse(
            node=node_to_pb(await self._app.get_node(require_name(request.name, "name")))
        )

    async def ListGpus(self, request: pb.ListGpusRequest, context: Ctx) -> pb.ListGpusResponse:
        size = page_size(request.page.page_size, MAX_PAGE_SIZE)
        gpus, token = take_page(
            await self._app.list_gpus(request.node, request.gpu_type), _gpu_key, size, request.page.page_token
        )
        out = []
        for node, gpu in gpus:
            msg = gpu_to_pb(node, gpu)
            telemetry = self._app.gpu_telemetry(node, gpu.index)
            if telemetry is not None:
                msg.telemetry.CopyFrom(telemetry)
            out.append(msg)
        return pb.ListGpusResponse(gpus=out, next_page_token=token)

    async def CordonNode(self, request: pb.CordonNodeRequest, context: Ctx) -> pb.CordonNodeResponse:
        node = await self._app.set_status(
            require_name(request.name, "name"),
            NodeStatus.CORDONED,
            request.expected_version or None,
            audit_actor(request.actor),
        )
        return pb.CordonNodeResponse(node=node_to_pb(node))

    async def UncordonNode(self, request: pb.UncordonNodeRequest, context: Ctx) -> pb.UncordonNodeResponse:
        node = await self._app.set_status(
            require_name(request.name, "name"),
            NodeStatus.READY,
            request.expected_version or None,
            audit_actor(request.actor),
        )
        return pb.UncordonNodeResponse(node=node_to_pb(node))

    async def DrainNode(self, request: pb.DrainNodeRequest, context: Ctx) -> pb.DrainNodeResponse:
        if request.grace_s < 0:
            raise InvalidArgument(f"grace_s: must be >= 0, got {request.grace_s}", field="grace_s")
        node, moving = await self._app.drain_node(
            require_name(request.name, "name"), audit_actor(request.actor)
        )
        return pb.DrainNodeResponse(node=node_to_pb(node), replicas_to_move=moving)

    async def GetReplicas(self, request: pb.GetReplicasRequest, context: Ctx) -> pb.GetReplicasResponse:
        size = page_size(request.page.page_size, MAX_PAGE_SIZE)
        replicas, token = take_page(
            await self._app.get_replicas(request.deployment), _replica_key, size, request.page.page_token
        )
        msgs = [replica_to_pb(r, info.restarts, info.message, info.endpoint) for r, info in replicas]
        short = [shortfall_to_pb(s) for s in self._app.get_shortfalls(request.deployment)]
        return pb.GetReplicasResponse(replicas=msgs, next_page_token=token, shortfalls=short)

    async def ApplyDesired(self, request: pb.ApplyDesiredRequest, context: Ctx) -> pb.ApplyDesiredResponse:
        deployment = require_name(request.deployment, "deployment")
        pools = resizes_from_pb(request.pools, "pools")
        result = await self._app.apply_desired(deployment, request.spec_version, request.decision_id, pools)
        return pb.ApplyDesiredResponse(
            replicas_to_start=result.started,
            replicas_to_drain=result.draining,
            replicas_unchanged=result.unchanged,
            infeasible=[infeasible_to_pb(item) for item in result.infeasible],
        )


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, app: PlacementApp) -> None:
        self._app = app

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.ConnectRequest], context: Ctx
    ) -> AsyncIterator[agent_pb2.ConnectResponse]:
        """Register first; then heartbeats, acks and status flow in while commands flow out."""
        channel = self._app.agents
        leadership = self._app.leadership
        if leadership is not None and not await leadership.decided(FIRST_RENEWAL_WAIT_S):
            # A follower: the agent belongs with the leader (see opscale/services/placement/leader.py).
            there = leadership.leader_address
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"this placement replica does not lead; connect to the leader"
                f"{' at ' + there if there else ' (retry through the placement address)'}",
                trailing_metadata=((LEADER_METADATA, there),) if there else (),
            )
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("message") != "register":
            raise InvalidArgument("the first message on the stream must be register", field="register")
        require_node(first.register.node_name)  # an agent's credentials name the one node it may be
        agent, ack = await channel.register(first.register)
        reader = asyncio.create_task(self._read(request_iterator, agent), name=f"agent-{agent.node}-reader")
        try:
            yield agent_pb2.ConnectResponse(register_ack=ack)
            # Commands are delivered when their writer rings this node's doorbell; the slow, jittered
            # poll only covers a writer in another placement process. Polling every stream every few
            # seconds would be 400 queries/s at 2,000 agents for nothing.
            poll_s = SAFETY_POLL_S * random.uniform(0.5, 1.0)
            while not agent.closed.is_set() and not reader.done():
                agent.wake.clear()  # before reading, so a command queued meanwhile rings again
                for response in await channel.deliver(agent):
                    yield response
                waiter = asyncio.ensure_future(agent.wake.wait())
                await asyncio.wait({waiter, reader}, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._app.registry.release(agent)

    async def _read(
        self, request_iterator: AsyncIterator[agent_pb2.ConnectRequest], agent: AgentSession
    ) -> None:
        channel = self._app.agents
        async for message in request_iterator:
            if agent.closed.is_set():
                return
            kind = message.WhichOneof("message")
            if kind == "heartbeat":
                await channel.heartbeat(agent, message.heartbeat)
            elif kind == "ack":
                await channel.ack(agent, message.ack)
            elif kind == "status":
                await channel.status(agent, message.status)
            elif kind == "register":
                raise InvalidArgument(
                    "register: only the first message of a stream registers", field="register"
                )
