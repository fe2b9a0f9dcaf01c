"""Placement: proto <-> domain conversions of its own records (nodes, GPUs, replicas, commands); pools,
enums and commands themselves go through ``opscale.wire``."""

from __future__ import annotations

from opscale.actuation import from_payload
from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.common.v1 import common_pb2
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.db.records import CommandRecord, GpuRecord, NodeRecord, ReplicaRecord
from opscale.placement import Infeasible
from opscale.pools import PoolKey
from opscale.services.placement.shortfall import Shortfall
from opscale.wire.commands import command_to_pb as typed_command_to_pb
from opscale.wire.enums import NODE_STATUS, REPLICA_DESIRED, REPLICA_OBSERVED
from opscale.wire.pools import pool_to_pb

TOPOLOGY_KEYS = ("zone", "s2", "s1", "s0", "nvlink_domain")


def gpu_to_pb(node: str, gpu: GpuRecord) -> pb.Gpu:
    return pb.Gpu(
        node=node,
        index=gpu.index,
        uuid=gpu.uuid or "",
        gpu_type=gpu.gpu_type,
        memory_bytes=gpu.memory_bytes,
        nvlink_domain=gpu.nvlink_domain or "",
    )


def node_to_pb(node: NodeRecord) -> pb.Node:
    labels = {str(k): str(v) for k, v in dict(node.labels).items()}
    return pb.Node(
        name=node.name,
        status=NODE_STATUS.to_pb(node.status),  # type: ignore[arg-type]
        topology=pb.Topology(**{k: labels.get(k, "") for k in TOPOLOGY_KEYS}),
        labels={k: v for k, v in labels.items() if k not in TOPOLOGY_KEYS},
        gpus=[gpu_to_pb(node.name, g) for g in node.gpus],
        last_heartbeat_ms=int(node.last_heartbeat_at.timestamp() * 1000) if node.last_heartbeat_at else 0,
        registered_at_ms=int(node.registered_at.timestamp() * 1000),
        version=node.version,
    )


def replica_to_pb(
    replica: ReplicaRecord, restarts: int = 0, message: str = "", endpoint: str = ""
) -> pb.Replica:
    return pb.Replica(
        id=replica.id,
        deployment=replica.deployment,
        pool=pool_to_pb(PoolKey(replica.stage, replica.operator)),
        node=replica.node or "",
        gpu_indices=list(replica.gpu_indices),
        desired_state=REPLICA_DESIRED.to_pb(replica.desired_state),  # type: ignore[arg-type]
        observed_state=REPLICA_OBSERVED.to_pb(replica.observed_state),  # type: ignore[arg-type]
        generation=replica.generation,
        version=replica.version,
        restarts=restarts,
        message=message,
        endpoint=endpoint,
    )


def infeasible_to_pb(item: Infeasible) -> common_pb2.Infeasibility:
    return common_pb2.Infeasibility(
        pool=pool_to_pb(PoolKey(item.stage, item.operator)),
        reason=item.reason,
        requested=item.requested,
        satisfiable=item.placed,
    )


def shortfall_to_pb(item: Shortfall) -> pb.PoolShortfall:
    return pb.PoolShortfall(
        deployment=item.deployment,
        pool=pool_to_pb(PoolKey(item.stage, item.operator)),
        target=item.target,
        ready=item.ready,
        reason=item.reason,
        since_ms=int(item.since.timestamp() * 1000),
    )


def command_to_pb(command: CommandRecord) -> apb.Command:
    """A stored command row as the agent receives it (its payload read back as a typed command)."""
    doc = command.payload
    typed = from_payload(command.kind.value, command.replica_id, command.generation, doc)
    trace = {str(k): str(v) for k, v in dict(doc.get("trace_context", {})).items()}
    return typed_command_to_pb(
        typed, command_id=str(command.id), idempotency_key=command.idempotency_key, trace_context=trace
    )
