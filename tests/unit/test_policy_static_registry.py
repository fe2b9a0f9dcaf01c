"""static policy, the registry, and value types' JSON round-trips (purity: tests/unit/test_layers.py)."""

from __future__ import annotations

import json

import pytest

from opscale.errors import AlreadyExists, InvalidArgument
from opscale.policy import registry
from opscale.policy.static import StaticPolicy
from opscale.policy.types import (
    SLO,
    Limits,
    LoadWindow,
    PolicyInput,
    PolicyState,
    PoolKey,
    PoolLimits,
    PoolPlan,
    Signal,
    StabilizerState,
)

D = PoolKey("decode", "model")
P = PoolKey("prefill", "model")


def inp(
    now_s: float,
    tps: float,
    state: PolicyState | None = None,
    limits: Limits | None = None,
    frozen: bool = False,
) -> PolicyInput:
    return PolicyInput(
        now_s=now_s,
        deployment="dep",
        load=LoadWindow(window_s=1.0, decode_tps=tps),
        current={D: PoolPlan(2), P: PoolPlan(1)},
        slo=SLO(1000.0, 100.0),
        limits=limits or Limits(),
        state=state or PolicyState(),
        frozen=frozen,
    )


def test_static_never_changes() -> None:
    pol = StaticPolicy.from_params(
        {"pools": {"decode/model": 8, "prefill/model": {"replicas": 4, "gpus_per_replica": 2}}}
    )
    state = PolicyState()
    for t, tps in enumerate([0.0, 1e6, 5.0]):
        out = pol.decide(inp(float(t), tps, state))
        state = out.state
        assert out.desired == {D: PoolPlan(8), P: PoolPlan(4, gpus_per_replica=2)}
        assert out.reasons == [
            "decode/model: fixed at 8 replicas (static peak provisioning).",
            "prefill/model: fixed at 4 replicas (static peak provisioning).",
        ]
    assert pol.interval_s == 60.0


def test_static_respects_bounds_and_freeze() -> None:
    pol = StaticPolicy.from_params({"pools": {"decode/model": 8}})
    limits = Limits(pools={D: PoolLimits(max_replicas=6)})
    assert pol.decide(inp(0.0, 0.0, limits=limits)).desired[D].replicas == 6
    assert pol.decide(inp(0.0, 0.0, frozen=True)).desired[D].replicas == 2


def test_static_params_validated() -> None:
    with pytest.raises(InvalidArgument, match="pools"):
        StaticPolicy.from_params({"pools": {}})
    with pytest.raises(InvalidArgument, match="stage/operator"):
        StaticPolicy.from_params({"pools": {"decode": 3}})
    with pytest.raises(InvalidArgument, match="replicas must be >= 0"):
        StaticPolicy.from_params({"pools": {"decode/model": -1}})


def test_registry_lists_known_names_on_unknown() -> None:
    assert {"operator", "model", "pd", "static", "utilization"} <= set(registry.names())
    with pytest.raises(InvalidArgument, match=r"unknown policy 'nope'; known policies: .*'pd'.*'static'"):
        registry.descriptor("nope")
    with pytest.raises(AlreadyExists):
        registry.register(registry.descriptor("pd"))


def test_pool_key_text_round_trip() -> None:
    assert PoolKey.parse(str(P)) == P and str(P) == "prefill/model"
    for bad in ("decode", "/x", "a/", "a/b/c"):
        with pytest.raises(InvalidArgument):
            PoolKey.parse(bad)


def test_states_and_plans_round_trip_through_json() -> None:
    state = PolicyState(
        policy="pd",
        stabilizer=StabilizerState(
            max_window={D: ((1.5, 9), (3.0, 4))},
            min_window={D: ((3.0, 4),)},
            last_up_s={D: 1.5, P: 1.5},
            last_down_s={},
            last_good={D: 9, P: 5},
        ),
        data={"pending": {"decode/model": 4}, "since_s": 3.0, "ok_ticks": 1},
    )
    assert PolicyState.from_json(json.loads(json.dumps(state.to_json()))) == state
    plan = PoolPlan(3, batch_size=16, gpus_per_replica=2, predicted_latency_ms=41.5, watts=None)
    assert PoolPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    with pytest.raises(InvalidArgument, match="expected an integer"):
        PoolPlan.from_json({"replicas": "3"})


def test_value_types_validate() -> None:
    with pytest.raises(InvalidArgument, match="decode_tps"):
        LoadWindow(window_s=1.0, decode_tps=-1.0)
    with pytest.raises(InvalidArgument, match="gpu_utilization"):
        LoadWindow(window_s=1.0, gpu_utilization=7.0)
    with pytest.raises(InvalidArgument, match="staleness"):
        LoadWindow(window_s=1.0, staleness_s={Signal.TBT: -1.0})
    with pytest.raises(InvalidArgument, match="percentile"):
        SLO(100.0, 10.0, percentile=0.99 * 200)
    assert SLO(100.0, 10.0, percentile=99.0).quantile == pytest.approx(0.99)
    with pytest.raises(InvalidArgument, match="max_replicas"):
        PoolLimits(min_replicas=3, max_replicas=2)
