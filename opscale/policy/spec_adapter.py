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
* What each policy builds from the spec (its parameters, its pools, the signals it reads) is its
  descriptor's ``build`` (``opscale.policy.registry``); this module adds what every policy shares.
"""

from __future__ import annotations

from opscale.policy.registry import PolicySetup, descriptor
from opscale.policy.types import SLO, Limits, PoolKey, PoolLimits
from opscale.spec import DeploymentSpec

__all__ = ["PolicySetup", "policy_setup", "setup_for", "spec_limits", "spec_slo"]


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
            pools[lim.pool] = bounds
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


def setup_for(spec: DeploymentSpec, kind: str) -> PolicySetup:
    """The setup for policy ``kind`` on this spec. ``kind`` need not be the spec's own policy (the
    what-if tries others); it then gets no parameters from the spec, so one that requires them (pd,
    static) raises ``InvalidArgument``."""
    desc = descriptor(kind)
    built = desc.build(spec, spec.policy_params() if kind == spec.policy else None)
    return PolicySetup(
        policy=built.policy,
        slo=spec_slo(spec),
        limits=spec_limits(spec),
        params=built.params,
        pools=built.pools,
        signals=built.signals,
    )


def policy_setup(spec: DeploymentSpec) -> PolicySetup:
    """The spec's own policy, ready to ``decide``."""
    return setup_for(spec, spec.policy)
