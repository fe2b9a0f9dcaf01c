"""Placement: proto <-> domain conversions."""

from __future__ import annotations

from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.db.records import GpuRecord, NodeRecord
from opscale.db.status import NodeStatus

STATUS_TO_PB = {
    NodeStatus.REGISTERING: pb.NODE_STATUS_REGISTERING,
    NodeStatus.READY: pb.NODE_STATUS_READY,
    NodeStatus.CORDONED: pb.NODE_STATUS_CORDONED,
    NodeStatus.DRAINING: pb.NODE_STATUS_DRAINING,
    NodeStatus.LOST: pb.NODE_STATUS_LOST,
    NodeStatus.DECOMMISSIONED: pb.NODE_STATUS_DECOMMISSIONED,
}
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
        status=STATUS_TO_PB[node.status],
        topology=pb.Topology(**{k: labels.get(k, "") for k in TOPOLOGY_KEYS}),
        labels={k: v for k, v in labels.items() if k not in TOPOLOGY_KEYS},
        gpus=[gpu_to_pb(node.name, g) for g in node.gpus],
        last_heartbeat_ms=int(node.last_heartbeat_at.timestamp() * 1000) if node.last_heartbeat_at else 0,
        registered_at_ms=int(node.registered_at.timestamp() * 1000),
        version=node.version,
    )
