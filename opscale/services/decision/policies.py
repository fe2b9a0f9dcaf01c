"""A deployment spec -> the ready policy and the fixed inputs of its ticks (``Setup``), cached per spec
version: the loop asks every tick, and building a model-based policy loads profiles.

The mapping itself is ``opscale.policy.spec_adapter.policy_setup`` (shared with the simulator and what-if);
this adds the control interval the loop schedules by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opscale.policy.spec_adapter import policy_setup
from opscale.policy.types import SLO, Limits, Policy, PoolKey
from opscale.spec import DeploymentSpec


@dataclass(frozen=True, slots=True)
class Setup:
    policy: Policy
    slo: SLO
    limits: Limits
    params: Mapping[str, object]
    pools: tuple[PoolKey, ...]
    interval_s: float  # the spec's, else the policy's default
    read_pools: tuple[PoolKey, ...] = ()  # the pools whose windows the loop reads each tick


def setup_for(spec: DeploymentSpec) -> Setup:
    """Raises ``InvalidArgument`` (naming the field) when the spec's policy cannot be built."""
    made = policy_setup(spec)
    return Setup(
        policy=made.policy,
        slo=made.slo,
        limits=made.limits,
        params=made.params,
        pools=made.pools,
        interval_s=spec.interval_s or made.policy.interval_s,
        # Per-pool windows cost 10 series a pool (measured: 31 -> 11 series without them): read them only
        # for a policy whose descriptor says it reads a per-pool signal.
        read_pools=made.pools if made.reads_pools else (),
    )


class SetupCache:
    """Parsed specs and built policies by (deployment, spec version); a new version replaces the old."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[int, DeploymentSpec, Setup]] = {}

    def get(self, name: str, version: int) -> tuple[DeploymentSpec, Setup] | None:
        hit = self._by_name.get(name)
        return (hit[1], hit[2]) if hit is not None and hit[0] == version else None

    def put(self, name: str, version: int, spec: DeploymentSpec, setup: Setup) -> None:
        self._by_name[name] = (version, spec, setup)

    def forget_except(self, names: set[str]) -> None:
        for name in [n for n in self._by_name if n not in names]:
            del self._by_name[name]
