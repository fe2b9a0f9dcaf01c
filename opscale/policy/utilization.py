"""``utilization``: the Kubernetes Horizontal Pod Autoscaler's rule, per pool — the baseline users know.

Algorithm, from https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/
("Algorithm details"):

    desiredReplicas = ceil[currentReplicas × (currentMetricValue / desiredMetricValue)]

skipped when the ratio is within the tolerance (``--horizontal-pod-autoscaler-tolerance``, default 0.1)
of 1.0. The controller syncs every 15 s (``--horizontal-pod-autoscaler-sync-period``), so
``interval_s = 15``. Its defaults, which this policy hands the stabilizer (a deployment's ``Limits``
override them): a 300 s scale-down stabilization window and none for scale-up; scale-up limited per
period to the larger of +100% and +4 pods (``selectPolicy: Max``); scale-down to −100%. Here
``max_step_abs = 4`` with ``max_step_frac = 1.0`` gives exactly that: a move of at most
max(4, current) per tick, which for scale-down is "all of them". An HPA with zero replicas does not
scale (its metric is undefined), and neither does this policy; ``min_replicas`` does.

The metric is GPU utilization by default — per pool if the counters split it, else deployment-wide —
or a pool's busy fraction. (HeteroScale shows GPU utilization misleads for memory-bound decode pools;
that is the point of keeping this baseline honest rather than clever.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opscale.policy.pipeline import finish, parse_params, pool_text
from opscale.policy.registry import Built, PolicyDescriptor, base_params, whole_pools
from opscale.policy.stabilizer import StabilizerConfig
from opscale.policy.types import PolicyInput, PolicyOutput, PoolKey, PoolPlan, Signal

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec


class UtilizationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["gpu_utilization", "busy_fraction"] = "gpu_utilization"
    target: float = Field(0.6, gt=0.0, le=1.0)
    tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    interval_s: float = Field(15.0, gt=0)
    scale_down_window_s: float = Field(300.0, ge=0)
    max_staleness_s: float = Field(60.0, gt=0)
    pools: list[str] | None = None  # pools to scale; default: every pool in the current plan

    @field_validator("pools")
    @classmethod
    def _pools(cls, value: list[str] | None) -> list[str] | None:
        for text in value or []:
            pool_text(text)
        return value


def _ceil(x: float) -> int:
    """ceil that ignores float noise below 1e-9: 4 × 0.9 / 0.6 = 6.000000000000001 gives 6, as intended."""
    return max(0, math.ceil(x - 1e-9))


class UtilizationPolicy:
    name: ClassVar[str] = "utilization"
    version: ClassVar[str] = "1"

    def __init__(self, params: UtilizationParams) -> None:
        self.params = params
        self.signal = Signal.GPU_UTILIZATION if params.metric == "gpu_utilization" else Signal.BUSY_FRACTION
        self.stabilizer_defaults = StabilizerConfig(
            scale_down_window_s=params.scale_down_window_s,
            max_step_abs=4,
            max_step_frac=1.0,
            max_staleness_s=params.max_staleness_s,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> UtilizationPolicy:
        return cls(parse_params(UtilizationParams, params, cls.name))

    @property
    def interval_s(self) -> float:
        return self.params.interval_s

    def _metric(self, inp: PolicyInput, pool: PoolKey) -> float | None:
        if self.params.metric == "busy_fraction":
            return inp.load.busy_fraction.get(pool)
        return inp.load.gpu_utilization_by_pool.get(pool, inp.load.gpu_utilization)

    def decide(self, inp: PolicyInput) -> PolicyOutput:
        p = self.params
        pools = [PoolKey.parse(t) for t in p.pools] if p.pools is not None else sorted(inp.current)
        raw_plans: dict[PoolKey, PoolPlan] = {}
        reasons: list[str] = []
        for pool in pools:
            plan = inp.current.get(pool, PoolPlan(0))
            cur, metric = plan.replicas, self._metric(inp, pool)
            if metric is None:
                want = cur
                reasons.append(f"{pool}: no {p.metric} sample, keeping {cur} replicas.")
            elif cur == 0:
                want = 0
                reasons.append(
                    f"{pool}: 0 replicas, so {p.metric} is undefined; like the HPA, not scaling "
                    f"from zero (min_replicas does)."
                )
            elif abs(metric / p.target - 1.0) <= p.tolerance:
                want = cur
                reasons.append(
                    f"{pool}: {p.metric} {metric:.2f} / target {p.target:.2f} = "
                    f"{metric / p.target:.2f}, within the {p.tolerance:g} tolerance of 1: "
                    f"keeping {cur} replicas."
                )
            else:
                want = _ceil(cur * metric / p.target)
                reasons.append(
                    f"{pool}: ceil({cur} × {metric:.2f} / {p.target:.2f}) = "
                    f"ceil({cur * metric / p.target:.2f}) = {want} replicas."
                )
            raw_plans[pool] = replace(plan, replicas=want, predicted_latency_ms=None, watts=None)
        return finish(
            inp,
            policy=self.name,
            raw_plans=raw_plans,
            reasons=reasons,
            defaults=self.stabilizer_defaults,
            required=[self.signal],
        )


# --- registration ----------------------------------------------------------------------------------


class UtilizationSpecParams(BaseModel):
    """Parameters of the `utilization` policy (the Kubernetes HPA formula)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_utilization: float = Field(0.6, gt=0, le=1, description="in (0, 1]")


def _build(spec: DeploymentSpec, given: UtilizationSpecParams | None) -> Built:
    pools = whole_pools(spec)
    params = base_params(spec) | {"pools": [str(p) for p in pools]}
    if given is not None:
        params["target"] = given.target_utilization
    policy = UtilizationPolicy.from_params(params)
    return Built(policy, pools, frozenset({policy.signal}), params)


DESCRIPTOR = PolicyDescriptor(
    name=UtilizationPolicy.name,
    summary="the Kubernetes HPA rule on GPU utilization, per whole-model pool",
    build=_build,
    params=UtilizationSpecParams,
)
