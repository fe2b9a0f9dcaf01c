"""Placement: proto <-> domain conversions."""

from __future__ import annotations

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.common.v1 import common_pb2
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.db.records import CommandRecord, GpuRecord, NodeRecord, ReplicaRecord
from opscale.db.status import CommandKind, NodeStatus, ReplicaDesired, ReplicaObserved
from opscale.errors import InvalidArgument
from opscale.placement import Infeasible
from opscale.spec import OperatorKind, Stage
from services.common_convert import OPERATOR_TO_PB, STAGE_TO_PB, pool_from_pb
from services.placement.demand import PoolRequest

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


REPLICA_DESIRED_TO_PB = {
    ReplicaDesired.RUNNING: pb.REPLICA_DESIRED_STATE_RUNNING,
    ReplicaDesired.DRAINING: pb.REPLICA_DESIRED_STATE_DRAINING,
    ReplicaDesired.STOPPED: pb.REPLICA_DESIRED_STATE_STOPPED,
}
REPLICA_OBSERVED_TO_PB = {
    ReplicaObserved.PENDING: pb.REPLICA_OBSERVED_STATE_PENDING,
    ReplicaObserved.STARTING: pb.REPLICA_OBSERVED_STATE_STARTING,
    ReplicaObserved.READY: pb.REPLICA_OBSERVED_STATE_READY,
    ReplicaObserved.DRAINING: pb.REPLICA_OBSERVED_STATE_DRAINING,
    ReplicaObserved.STOPPED: pb.REPLICA_OBSERVED_STATE_STOPPED,
    ReplicaObserved.FAILED: pb.REPLICA_OBSERVED_STATE_FAILED,
    ReplicaObserved.LOST: pb.REPLICA_OBSERVED_STATE_LOST,
}


def _pool_key(stage: str, operator: str) -> common_pb2.PoolKey:
    key = common_pb2.PoolKey()
    if stage in Stage._value2member_map_:
        key.stage = STAGE_TO_PB[Stage(stage)]
    if operator in OperatorKind._value2member_map_:
        key.operator = OPERATOR_TO_PB[OperatorKind(operator)]
    return key


def replica_to_pb(
    replica: ReplicaRecord, restarts: int = 0, message: str = "", endpoint: str = ""
) -> pb.Replica:
    return pb.Replica(
        id=replica.id,
        deployment=replica.deployment,
        pool=_pool_key(replica.stage, replica.operator),
        node=replica.node or "",
        gpu_indices=list(replica.gpu_indices),
        desired_state=REPLICA_DESIRED_TO_PB[replica.desired_state],
        observed_state=REPLICA_OBSERVED_TO_PB[replica.observed_state],
        generation=replica.generation,
        version=replica.version,
        restarts=restarts,
        message=message,
        endpoint=endpoint,
    )


def infeasible_to_pb(item: Infeasible) -> common_pb2.Infeasibility:
    return common_pb2.Infeasibility(
        pool=_pool_key(item.stage, item.operator),
        reason=item.reason,
        requested=item.requested,
        satisfiable=item.placed,
    )


def command_to_pb(command: CommandRecord) -> apb.Command:
    doc = command.payload
    out = apb.Command(
        command_id=str(command.id),
        idempotency_key=command.idempotency_key,
        replica_id=command.replica_id,
        generation=command.generation,
        trace_context={str(k): str(v) for k, v in dict(doc.get("trace_context", {})).items()},
    )
    if command.kind is CommandKind.START:
        out.start.CopyFrom(
            apb.StartReplica(
                deployment=str(doc.get("deployment", "")),
                pool=_pool_key(str(doc.get("stage", "")), str(doc.get("operator", ""))),
                template=str(doc.get("template", "")),
                args={str(k): str(v) for k, v in dict(doc.get("args", {})).items()},
                gpu_indices=[int(i) for i in doc.get("gpu_indices", [])],
                env={str(k): str(v) for k, v in dict(doc.get("env", {})).items()},
            )
        )
    elif command.kind is CommandKind.STOP:
        out.stop.CopyFrom(apb.StopReplica(grace_s=float(doc.get("grace_s", 0.0))))
    else:
        out.drain.CopyFrom(apb.DrainReplica(grace_s=float(doc.get("grace_s", 0.0))))
    return out


def pool_request_from_pb(plan: common_pb2.PoolPlan, field: str) -> PoolRequest:
    if not plan.HasField("pool"):
        raise InvalidArgument(f"{field}.pool is required", field=f"{field}.pool")
    return PoolRequest(
        pool=pool_from_pb(plan.pool, f"{field}.pool"),
        replicas=plan.replicas,
        batch_size=plan.batch_size,
        gpus_per_replica=plan.gpus_per_replica or 1,
        gpu_type=plan.gpu_type,
    )
