"""Pool keys and plans between the policy's types (``PoolKey("decode", "model")``) and the wire."""

from __future__ import annotations

from collections.abc import Mapping

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.policy.types import PoolKey, PoolPlan
from opscale.spec import OperatorKind, PoolRef, Stage
from services.common_convert import pool_to_pb


def pool_key_to_pb(pool: PoolKey) -> cpb.PoolKey:
    """A policy pool as a proto key; a stage or operator opscale has no enum for becomes UNSPECIFIED
    (policies only use the spec's names, so that never happens for a recorded decision)."""
    try:
        return pool_to_pb(PoolRef(stage=Stage(pool.stage), operator=OperatorKind(pool.operator)))
    except ValueError:
        return cpb.PoolKey()


def pool_key_from_ref(pool: PoolRef) -> PoolKey:
    return PoolKey(pool.stage.value, pool.operator.value)


def plan_to_pb(pool: PoolKey, plan: PoolPlan, draining: int = 0) -> cpb.PoolPlan:
    return cpb.PoolPlan(
        pool=pool_key_to_pb(pool),
        replicas=plan.replicas,
        batch_size=plan.batch_size or 0,
        gpus_per_replica=plan.gpus_per_replica,
        draining_replicas=draining,
        predicted_latency_ms=plan.predicted_latency_ms or 0.0,
        predicted_watts=plan.watts or 0.0,
    )


def plans_to_pb(
    plans: Mapping[PoolKey, PoolPlan], draining: Mapping[PoolKey, int] | None = None
) -> list[cpb.PoolPlan]:
    drain = draining or {}
    return [plan_to_pb(pool, plan, drain.get(pool, 0)) for pool, plan in sorted(plans.items())]
