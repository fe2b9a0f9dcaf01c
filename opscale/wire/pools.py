"""Pools, pool plans, predictions and infeasibilities between the domain and ``opscale.api.common.v1``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.errors import InvalidArgument
from opscale.pools import OperatorKind, PoolKey, Stage
from opscale.wire.enums import OPERATOR, STAGE

if TYPE_CHECKING:  # the CLI reads pools without the policy layer (and numpy): PoolPlan is built lazily
    from opscale.policy.types import PoolPlan


def pool_to_pb(pool: PoolKey) -> cpb.PoolKey:
    """A pool as a proto key; a stage or operator the proto has no value for stays unspecified (only
    policies' internal pools can be such; what users and the wire name are known ones)."""
    key = cpb.PoolKey()
    if pool.stage in Stage.__members__.values():
        key.stage = STAGE.to_pb(Stage(pool.stage))  # type: ignore[assignment]
    if pool.operator in OperatorKind.__members__.values():
        key.operator = OPERATOR.to_pb(OperatorKind(pool.operator))  # type: ignore[assignment]
    return key


def pool_from_pb(msg: cpb.PoolKey, field: str) -> PoolKey:
    stage = STAGE.from_pb(msg.stage, f"{field}.stage")
    operator = OPERATOR.from_pb(msg.operator, f"{field}.operator")
    return PoolKey(stage.value, operator.value)


def pool_label(msg: cpb.PoolKey) -> str:
    """``decode/attention`` for display, whatever the numbers (an unknown one shows as such)."""
    return f"{STAGE.label(msg.stage)}/{OPERATOR.label(msg.operator)}"


def num(value: float | None) -> float:
    """The wire has no null or infinity for these doubles: absent is 0."""
    return 0.0 if value is None or not math.isfinite(value) else value


def plan_to_pb(pool: PoolKey, plan: PoolPlan, draining: int = 0) -> cpb.PoolPlan:
    return cpb.PoolPlan(
        pool=pool_to_pb(pool),
        replicas=plan.replicas,
        batch_size=plan.batch_size or 0,
        gpus_per_replica=plan.gpus_per_replica,
        draining_replicas=draining,
        predicted_latency_ms=num(plan.predicted_latency_ms),
        predicted_watts=num(plan.watts),
        gpu_share=plan.gpu_share if plan.gpu_share < 1.0 else 0.0,
        micro_batches=plan.micro_batches if plan.micro_batches > 1 else 0,
    )


def plans_to_pb(
    plans: Mapping[PoolKey, PoolPlan], draining: Mapping[PoolKey, int] | None = None
) -> list[cpb.PoolPlan]:
    drain = draining or {}
    return [plan_to_pb(pool, plan, drain.get(pool, 0)) for pool, plan in sorted(plans.items())]


def plan_from_pb(msg: cpb.PoolPlan, field: str) -> tuple[PoolKey, PoolPlan, int]:
    """(pool, plan, draining replicas) of one proto plan."""
    if not msg.HasField("pool"):
        raise InvalidArgument(f"{field}.pool is required", field=f"{field}.pool")
    pool = pool_from_pb(msg.pool, f"{field}.pool")
    share = msg.gpu_share or 1.0
    if not (0.0 < share <= 1.0) or (share < 1.0 and (msg.gpus_per_replica or 1) != 1):
        raise InvalidArgument(
            f"{field}.gpu_share: must be in (0, 1] and below 1 only with gpus_per_replica 1, got "
            f"{msg.gpu_share} with {msg.gpus_per_replica} GPUs per replica",
            field=f"{field}.gpu_share",
        )
    if msg.micro_batches > 64:
        raise InvalidArgument(
            f"{field}.micro_batches: must be at most 64, got {msg.micro_batches}",
            field=f"{field}.micro_batches",
        )
    from opscale.policy.types import PoolPlan

    plan = PoolPlan(
        replicas=msg.replicas,
        batch_size=msg.batch_size or None,
        gpus_per_replica=msg.gpus_per_replica or 1,
        predicted_latency_ms=msg.predicted_latency_ms or None,
        watts=msg.predicted_watts or None,
        gpu_share=share,
        micro_batches=msg.micro_batches or 1,
    )
    return pool, plan, msg.draining_replicas
