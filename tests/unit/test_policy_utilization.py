"""utilization (Kubernetes HPA rule): the formula, tolerance, 300 s scale-down window, metric choice."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from opscale.errors import InvalidArgument
from opscale.policy.types import SLO, LoadWindow, PolicyInput, PolicyState, PoolKey, PoolPlan, Signal
from opscale.policy.utilization import UtilizationPolicy

S = PoolKey("serving", "model")
DEC = PoolKey("decode", "model")
PRE = PoolKey("prefill", "model")


def inp(
    util: float | None,
    current: Mapping[PoolKey, int],
    *,
    now_s: float = 0.0,
    state: PolicyState | None = None,
    by_pool: Mapping[PoolKey, float] | None = None,
    busy: Mapping[PoolKey, float] | None = None,
    age: float | None = 1.0,
) -> PolicyInput:
    load = LoadWindow(
        window_s=15.0,
        gpu_utilization=util,
        gpu_utilization_by_pool=by_pool or {},
        busy_fraction=busy or {},
        staleness_s={Signal.GPU_UTILIZATION: age, Signal.BUSY_FRACTION: age},
    )
    return PolicyInput(
        now_s=now_s,
        deployment="dep",
        load=load,
        current={p: PoolPlan(n) for p, n in current.items()},
        slo=SLO(1000.0, 100.0),
        state=state or PolicyState(),
    )


def test_hpa_formula() -> None:
    # current 4, utilization 0.9, target 0.6: ratio 1.5, outside 1 ± 0.1; ceil(4 × 1.5) = ceil(6.0) = 6.
    # (4 × 0.9 / 0.6 is 6.000000000000001 in floats; the answer must still be 6, not 7.)
    out = UtilizationPolicy.from_params({"target": 0.6}).decide(inp(0.9, {S: 4}))
    assert out.desired[S].replicas == 6
    assert "serving/model: ceil(4 × 0.90 / 0.60) = ceil(6.00) = 6 replicas." in out.reasons


def test_tolerance_holds() -> None:
    # 0.65 / 0.6 = 1.083: |1.083 − 1| ≤ 0.1, no change; 0.54 / 0.6 = 0.9: exactly at the edge, no change.
    # No scale-down window: a fresh one would hold the 4 running replicas (the stabilizer's first sight).
    pol = UtilizationPolicy.from_params({"target": 0.6, "scale_down_window_s": 0.0})
    for util in (0.65, 0.54):
        out = pol.decide(inp(util, {S: 4}))
        assert out.desired[S].replicas == 4
        assert "within the 0.1 tolerance" in out.reasons[0]
    # 0.5 / 0.6 = 0.833: outside; ceil(4 × 0.833) = ceil(3.33) = 4 — and 0.3 / 0.6 → ceil(2.0) = 2.
    assert pol.decide(inp(0.3, {S: 4})).desired[S].replicas == 2


def test_scale_down_waits_for_the_300_s_window() -> None:
    # t=0: 0.6 on 6 replicas → hold 6 (recorded). From t=15 on, 0.3 → raw ceil(6 × 0.5) = 3, but the
    # max over the last 300 s is still 6 until the t=0 entry leaves the window (0, 300] at t=300.
    pol = UtilizationPolicy.from_params({})
    out = pol.decide(inp(0.6, {S: 6}, now_s=0.0))
    state, seen = out.state, []
    for t in range(15, 316, 15):
        out = pol.decide(inp(0.3, {S: out.desired[S].replicas}, now_s=float(t), state=state))
        state = out.state
        seen.append((t, out.desired[S].replicas))
    assert all(n == 6 for t, n in seen if t < 300)
    assert dict(seen)[300] == 3 and dict(seen)[315] == 3
    assert pol.interval_s == 15.0
    assert pol.stabilizer_defaults.scale_down_window_s == 300.0


def test_scale_up_step_is_hpa_default() -> None:
    # HPA default scale-up: max(+4 pods, +100%) per period. 2 replicas at 1.0 / 0.1 = 10× want 20,
    # allowed 2 + max(4, 2) = 6.
    out = UtilizationPolicy.from_params({"target": 0.1}).decide(inp(1.0, {S: 2}))
    assert out.desired[S].replicas == 6
    assert out.raw[S] == 20


def test_per_pool_gpu_utilization_and_busy_fraction() -> None:
    cur = {DEC: 4, PRE: 4}
    out = UtilizationPolicy.from_params({}).decide(inp(0.6, cur, by_pool={DEC: 0.9}))
    assert out.desired[DEC].replicas == 6 and out.desired[PRE].replicas == 4  # PRE falls back to 0.6
    out = UtilizationPolicy.from_params({"metric": "busy_fraction"}).decide(inp(None, cur, busy={PRE: 0.9}))
    assert out.desired[PRE].replicas == 6 and out.desired[DEC].replicas == 4
    assert "decode/model: no busy_fraction sample, keeping 4 replicas." in out.reasons


def test_zero_replicas_do_not_scale_and_stale_metric_holds() -> None:
    pol = UtilizationPolicy.from_params({})
    assert pol.decide(inp(0.9, {S: 0})).desired[S].replicas == 0
    out = pol.decide(inp(0.1, {S: 8}, age=None))
    assert out.desired[S].replicas == 8
    assert any("fail-static because gpu_utilization was never reported" in r for r in out.reasons)


def test_params_validated() -> None:
    with pytest.raises(InvalidArgument, match="target"):
        UtilizationPolicy.from_params({"target": 1.5})
    with pytest.raises(InvalidArgument, match="metric"):
        UtilizationPolicy.from_params({"metric": "sm_activity"})
    with pytest.raises(InvalidArgument, match="pools"):
        UtilizationPolicy.from_params({"pools": ["nodash"]})
