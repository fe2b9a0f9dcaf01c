"""Actuation on the wire: resizes (decision -> placement ``ApplyDesired``) and the typed replica commands
placement streams to node agents (``opscale.api.agent.v1.Command``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opscale.actuation import DrainReplica, ReplicaCommand, ResizePool, StartReplica, StopReplica
from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.common.v1 import common_pb2 as cpb
from opscale.errors import InvalidArgument
from opscale.policy.types import PoolPlan
from opscale.pools import PoolKey
from opscale.wire.pools import plan_from_pb, plan_to_pb, pool_from_pb, pool_to_pb


def resizes_of(desired: Mapping[PoolKey, PoolPlan], draining: Mapping[PoolKey, int]) -> list[ResizePool]:
    """A decision's plans as resize commands, in pool order."""
    return [
        ResizePool(
            pool=pool,
            replicas=plan.replicas,
            draining=draining.get(pool, 0),
            batch_size=plan.batch_size,
            gpus_per_replica=plan.gpus_per_replica,
            gpu_share=plan.gpu_share,
            micro_batches=plan.micro_batches,
        )
        for pool, plan in sorted(desired.items())
    ]


def resizes_to_pb(resizes: Iterable[ResizePool]) -> list[cpb.PoolPlan]:
    out = []
    for r in resizes:
        plan = PoolPlan(
            r.replicas, r.batch_size, r.gpus_per_replica, gpu_share=r.gpu_share, micro_batches=r.micro_batches
        )
        msg = plan_to_pb(r.pool, plan, r.draining)
        msg.gpu_type = r.gpu_type
        out.append(msg)
    return out


def resizes_from_pb(plans: Sequence[cpb.PoolPlan], field: str) -> list[ResizePool]:
    out = []
    for i, msg in enumerate(plans):
        pool, plan, draining = plan_from_pb(msg, f"{field}[{i}]")
        out.append(
            ResizePool(
                pool,
                plan.replicas,
                draining,
                plan.batch_size,
                plan.gpus_per_replica,
                msg.gpu_type,
                plan.gpu_share,
                plan.micro_batches,
            )
        )
    return out


def command_to_pb(
    command: ReplicaCommand, *, command_id: str, idempotency_key: str, trace_context: Mapping[str, str]
) -> apb.Command:
    out = apb.Command(
        command_id=command_id,
        idempotency_key=idempotency_key,
        replica_id=command.replica_id,
        generation=command.generation,
        trace_context=dict(trace_context),
    )
    if isinstance(command, StartReplica):
        out.start.CopyFrom(
            apb.StartReplica(
                deployment=command.deployment,
                pool=pool_to_pb(command.pool),
                template=command.template,
                args=dict(command.args),
                gpu_indices=list(command.gpu_indices),
                env=dict(command.env),
            )
        )
    elif isinstance(command, StopReplica):
        out.stop.CopyFrom(apb.StopReplica(grace_s=command.grace_s))
    else:
        out.drain.CopyFrom(apb.DrainReplica(grace_s=command.grace_s))
    return out


def command_from_pb(msg: apb.Command) -> ReplicaCommand:
    """Raises ``InvalidArgument`` for a command without an action or with an unknown pool."""
    action = msg.WhichOneof("action")
    if action == "start":
        s = msg.start
        return StartReplica(
            replica_id=msg.replica_id,
            generation=msg.generation,
            deployment=s.deployment,
            pool=pool_from_pb(s.pool, "start.pool"),
            template=s.template,
            gpu_indices=tuple(s.gpu_indices),
            args=dict(s.args),
            env=dict(s.env),
        )
    if action == "stop":
        return StopReplica(msg.replica_id, msg.generation, msg.stop.grace_s)
    if action == "drain":
        return DrainReplica(msg.replica_id, msg.generation, msg.drain.grace_s)
    raise InvalidArgument("command has no action (start, stop or drain)", field="action")
