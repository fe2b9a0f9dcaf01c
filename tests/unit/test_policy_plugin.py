"""Adding a policy is one module and one registration: this file is that module.

``per-request`` is an example policy that exists only here: whole-model pools sized at one replica per
``requests_per_replica`` requests/s of arrival rate. Registering its descriptor is all it takes for the
spec to accept it (and name bad parameters), for the wire to carry it, for the decision loop's setup,
the what-if and the simulator to run it, and for the loop to know which windows to read. Nothing
outside this file names it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from opscale.errors import InvalidArgument
from opscale.policy import registry
from opscale.policy.pipeline import finish
from opscale.policy.registry import Built, PolicyDescriptor, base_params, whole_pools
from opscale.policy.spec_adapter import policy_setup
from opscale.policy.stabilizer import StabilizerConfig
from opscale.policy.types import LoadWindow, PolicyInput, PolicyOutput, PoolKey, PoolPlan, Signal
from opscale.policy.whatif import what_if
from opscale.sim.run import simulate
from opscale.sim.traces import Trace
from opscale.wire.specs import spec_from_pb, spec_to_pb
from tests.builders import spec

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec

# --- the policy module ----------------------------------------------------------------------------------


class PerRequestParams(BaseModel):
    """Parameters of the `per-request` policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_replica: float = Field(gt=0, description="arrival rate one replica carries, requests/s")


class PerRequestPolicy:
    name: ClassVar[str] = "per-request"
    version: ClassVar[str] = "1"
    interval_s: ClassVar[float] = 5.0

    def __init__(self, pools: tuple[PoolKey, ...], per_replica: float) -> None:
        self.pools, self.per_replica = pools, per_replica

    def decide(self, inp: PolicyInput) -> PolicyOutput:
        n = math.ceil(inp.load.arrival_rate_rps / self.per_replica - 1e-9)
        reasons = [f"ceil({inp.load.arrival_rate_rps:g} / {self.per_replica:g}) = {n} replicas per pool."]
        return finish(
            inp,
            policy=self.name,
            raw_plans={p: PoolPlan(n) for p in self.pools},
            reasons=reasons,
            defaults=StabilizerConfig(),
            required=[Signal.ARRIVAL_RATE],
        )


def _build(spec: DeploymentSpec, params: PerRequestParams | None) -> Built:
    if params is None:
        raise InvalidArgument("policy 'per-request' needs its params", field="params")
    pools = whole_pools(spec)
    policy = PerRequestPolicy(pools, params.requests_per_replica)
    return Built(policy, pools, frozenset({Signal.ARRIVAL_RATE}), base_params(spec))


DESCRIPTOR = PolicyDescriptor(
    name="per-request",
    summary="one replica per N requests/s (an example plug-in)",
    build=_build,
    params=PerRequestParams,
    params_required=True,
)

# --- its tests ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    registry.register(DESCRIPTOR)  # the one registration
    try:
        yield
    finally:
        registry.unregister(DESCRIPTOR.name)


def example(**overrides: object) -> DeploymentSpec:
    return spec(**{"policy": "per-request", "params": {"requests_per_replica": 4}, **overrides})


def test_the_spec_accepts_it_and_names_bad_parameters() -> None:
    assert example().params == {"requests_per_replica": 4.0}
    with pytest.raises(
        InvalidArgument, match=r"spec\.params: params\.requests_per_replica: .*greater than 0"
    ):
        spec(policy="per-request", params={"requests_per_replica": 0})
    with pytest.raises(InvalidArgument, match="policy 'per-request' needs its parameters"):
        spec(policy="per-request")
    # The legacy '<policy>_params' form works for it too, with no code naming it.
    assert spec(**{"policy": "per-request", "per-request_params": {"requests_per_replica": 2}}).params


def test_the_wire_carries_it() -> None:
    s = example()
    msg = spec_to_pb(s)
    assert msg.policy_name == "per-request" and spec_from_pb(msg) == s


def test_the_loop_setup_what_if_and_read_rule_use_it() -> None:
    setup = policy_setup(example(interval_s=2))
    assert setup.policy.name == "per-request" and not setup.reads_pools
    load = LoadWindow(window_s=10.0, arrival_rate_rps=10.0, staleness_s={Signal.ARRIVAL_RATE: 0.0})
    out = setup.policy.decide(
        PolicyInput(now_s=0.0, deployment="llama", load=load, current={}, slo=setup.slo)
    )
    assert {p: plan.replicas for p, plan in out.desired.items()} == {
        PoolKey("prefill", "model"): 3,  # ceil(10 / 4)
        PoolKey("decode", "model"): 3,
    }
    (plan,) = what_if(example(), 10.0, 512, 128)[:1]
    assert plan.policy == "per-request" and plan.gpus == 6


def test_the_simulator_runs_it() -> None:
    t = np.arange(0.0, 60.0, 0.5)  # 2 requests/s for a minute
    trace = Trace("steady", t, np.full(len(t), 256, dtype=np.int64), np.full(len(t), 32, dtype=np.int64))
    s = example(model={"preset": "llama3-8b"}, params={"requests_per_replica": 1})
    initial = {PoolKey("prefill", "model"): PoolPlan(1), PoolKey("decode", "model"): PoolPlan(1)}
    res = simulate(s, trace, initial, tail_s=30.0)
    assert res.policy == "per-request" and res.decisions > 0 and res.max_gpus_check == 0
    assert res.replicas["decode/model"].max() == 2  # ceil(2 / 1) once the window has filled


def test_unregistered_it_is_unknown_again() -> None:
    registry.unregister(DESCRIPTOR.name)
    with pytest.raises(InvalidArgument, match="unknown policy 'per-request'"):
        spec(policy="per-request")
    registry.register(DESCRIPTOR)
