"""From a validated ``DeploymentSpec`` to what the decision loop needs: a ready policy, its SLO and
limits, its parameters and the pools it will plan. The decision service calls ``policy_setup`` once per
spec version; the what-if calls ``setup_for`` to try a policy other than the spec's own.

Mapping notes:

* Limits: a limits entry with a pool bounds that pool; the entry without one is the default for every
  other pool (the spec's built-in default, [0, 64], when there is none). The spec's per-entry
  ``max_step`` has no per-pool counterpart in ``Limits``, so the smallest non-zero one becomes the
  deployment-wide ``max_step_abs`` (0 everywhere: no step limit) — the conservative reading.
* Stabilization: the spec always carries windows, cooldowns and a staleness bound (its defaults
  included), so they override every policy's own stabilizer defaults.
* ``interval_s`` 0 keeps the policy's own interval (operator 1 s, model 20 s, utilization 15 s, …).
* The ``operator`` and ``model`` policies get a ``PerfModel`` of the spec's shape (preset or HuggingFace
  config) on its GPU type; a shape without a usable profile is the caller's mistake (``InvalidArgument``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from opscale.errors import InvalidArgument
from opscale.model import perf_model
from opscale.policy.model_level import ModelPolicy
from opscale.policy.operator import OperatorPolicy
from opscale.policy.pd import PdPolicy
from opscale.policy.static import StaticPolicy
from opscale.policy.types import SLO, Limits, Policy, PoolKey, PoolLimits
from opscale.policy.utilization import UtilizationPolicy
from opscale.spec import STAGES_FOR_MODE, DeploymentSpec, PolicyKind, PoolRef, ServingMode


@dataclass(frozen=True, slots=True)
class PolicySetup:
    policy: Policy
    slo: SLO
    limits: Limits
    params: Mapping[str, object] = field(default_factory=dict)
    pools: tuple[PoolKey, ...] = ()


def _key(ref: PoolRef) -> PoolKey:
    return PoolKey(ref.stage.value, ref.operator.value)


def spec_slo(spec: DeploymentSpec) -> SLO:
    return SLO(spec.slo.ttft_ms, spec.slo.tbt_ms, spec.slo.percentile)


def spec_limits(spec: DeploymentSpec) -> Limits:
    pools: dict[PoolKey, PoolLimits] = {}
    default = PoolLimits(0, 64)  # opscale.spec.PoolLimits' built-in default
    for lim in spec.limits:
        bounds = PoolLimits(lim.min_replicas, lim.max_replicas)
        if lim.pool is None:
            default = bounds
        else:
            pools[_key(lim.pool)] = bounds
    steps = [lim.max_step for lim in spec.limits if lim.max_step > 0]
    st = spec.stabilization
    return Limits(
        pools=pools,
        default_pool=default,
        max_step_abs=min(steps) if steps else None,
        scale_up_window_s=st.scale_up_window_s,
        scale_down_window_s=st.scale_down_window_s,
        scale_up_cooldown_s=st.scale_up_cooldown_s,
        scale_down_cooldown_s=st.scale_down_cooldown_s,
        max_staleness_s=st.max_staleness_s,
    )


def _stages(spec: DeploymentSpec) -> tuple[str, ...]:
    return tuple(s.value for s in STAGES_FOR_MODE[spec.mode])


def _whole_pools(spec: DeploymentSpec) -> tuple[PoolKey, ...]:
    return tuple(PoolKey(s, "model") for s in _stages(spec))


def setup_for(spec: DeploymentSpec, kind: PolicyKind) -> PolicySetup:
    """The setup for policy ``kind`` on this spec (``kind`` need not be the spec's own policy; pd and
    static then still need their parameters in the spec)."""
    params: dict[str, object] = {}
    if spec.interval_s > 0:
        params["interval_s"] = spec.interval_s
    policy: Policy
    if kind in (PolicyKind.OPERATOR, PolicyKind.MODEL):
        shape = spec.model.shape()
        perf = perf_model(shape, spec.gpu_type)
        params.update(model=spec.model.preset, gpu_type=spec.gpu_type, mode=spec.mode.value)
        if kind is PolicyKind.OPERATOR:
            op = spec.operator_params
            if op is not None:
                params.update(floor_fraction=op.floor_fraction, max_batch_size=op.max_batch_size)
            policy = OperatorPolicy.from_params(params, perf)
            pools = tuple(
                PoolKey(s, spec_op.kind.value)
                for s in _stages(spec)
                for spec_op in perf.operators("prefill" if s == "serving" else s)
            )
        else:
            policy = ModelPolicy.from_params(params, perf)
            pools = _whole_pools(spec)
    elif kind is PolicyKind.PD:
        pd = spec.pd_params
        if pd is None or spec.mode is not ServingMode.DISAGGREGATED:
            raise InvalidArgument("policy 'pd' needs pd_params and mode 'disaggregated'", field="pd_params")
        params.update(
            target_decode_tps=pd.target_decode_tokens_per_s_per_instance,
            prefill_per_decode=pd.prefill_per_decode,
            scale_out_threshold=pd.scale_out_threshold,
            scale_in_threshold=pd.scale_in_threshold,
        )
        policy = PdPolicy.from_params(params)
        pools = _whole_pools(spec)
    elif kind is PolicyKind.UTILIZATION:
        pools = _whole_pools(spec)
        params["pools"] = [str(p) for p in pools]
        if spec.utilization_params is not None:
            params["target"] = spec.utilization_params.target_utilization
        policy = UtilizationPolicy.from_params(params)
    else:
        if spec.static_params is None:
            raise InvalidArgument("policy 'static' needs static_params", field="static_params")
        params["pools"] = {
            str(p.pool): {
                "replicas": p.replicas,
                "batch_size": p.batch_size,
                "gpus_per_replica": p.gpus_per_replica,
            }
            for p in spec.static_params.pools
        }
        policy = StaticPolicy.from_params(params)
        pools = tuple(_key(p.pool) for p in spec.static_params.pools)
    return PolicySetup(
        policy=policy, slo=spec_slo(spec), limits=spec_limits(spec), params=params, pools=pools
    )


def policy_setup(spec: DeploymentSpec) -> PolicySetup:
    """The spec's own policy, ready to ``decide``."""
    return setup_for(spec, spec.policy)
