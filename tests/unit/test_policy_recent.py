"""The window's last seconds as the forecast's floor (opscale.policy.recent)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from opscale.policy.adaptive import Forecast, forecast
from opscale.policy.operator import OperatorPolicy
from opscale.policy.recent import recent_floor, with_recent
from opscale.policy.types import SLO, PolicyInput, PolicyOutput, PolicyState, PoolKey
from tests.unit.test_policy_adaptive import window

PREFILL = PoolKey("prefill", "model")


def test_the_floor_is_two_standard_errors_below_the_count() -> None:
    w = replace(window(3.0), recent_arrivals=100, recent_s=5.0)
    assert recent_floor(w) == pytest.approx((100 - 2 * 10) / 5.0)  # 16 req/s
    assert recent_floor(replace(w, recent_arrivals=4)) == 0.0  # 4 − 2·2: nothing beyond noise
    assert recent_floor(window(3.0)) == 0.0  # no short window read
    assert recent_floor(replace(w, recent_arrivals=0)) == 0.0


def test_a_steady_load_is_not_raised_by_its_last_seconds() -> None:
    """At a steady 20 req/s the last 5 s hold ~100 requests: their floor (16) is below the window's."""
    fc = forecast([(float(t), 20.0) for t in range(60)], horizon_s=15.0, window_s=30.0)
    w = replace(window(20.0), recent_arrivals=100, recent_s=5.0)
    assert with_recent(fc, w) == fc
    # three standard errors above (131 in 5 s) still plans at most the Poisson-discounted count
    up = with_recent(fc, replace(w, recent_arrivals=131))
    assert up.central_rps == pytest.approx((131 - 2 * math.sqrt(131)) / 5.0)
    assert up.central_rps < 131 / 5.0


def test_a_burst_starts_the_forecast_from_the_last_seconds_plus_the_trend() -> None:
    fc = Forecast(central_rps=8.0, slope_rps_per_s=0.5, sigma_rps=1.0, horizon_s=12.0)
    w = replace(window(4.0), recent_arrivals=250, recent_s=5.0)  # 50 req/s in the last 5 s
    up = with_recent(fc, w)
    floor = (250 - 2 * math.sqrt(250)) / 5.0
    assert up.recent_rps == pytest.approx(floor)
    assert up.central_rps == pytest.approx(floor + 0.5 * 12.0)
    assert up.sigma_rps == fc.sigma_rps and up.rate_rps > fc.rate_rps
    assert "at least 43.7 over the last seconds" in up.sentence(4.0)
    # the planner's headroom scales the floor as it scales the window
    assert with_recent(fc, w, 1.5).recent_rps == pytest.approx(1.5 * floor)


def _tick(
    pol: OperatorPolicy, t: float, rps: float, recent: int | None, prev: PolicyOutput | None
) -> PolicyOutput:
    load = replace(window(rps), recent_arrivals=recent, recent_s=5.0 if recent is not None else 0.0)
    inp = PolicyInput(
        now_s=t,
        deployment="d",
        load=load,
        current=dict(prev.desired) if prev else {},
        slo=SLO(2000.0, 100.0),
        state=prev.state if prev else PolicyState(),
    )
    return pol.decide(inp)


def test_a_held_whole_model_stage_scales_up_in_its_slot_when_the_last_seconds_pass_its_plan() -> None:
    pol = OperatorPolicy.from_params({"model": "llama3-70b", "forecast": True, "correction": False})
    out: PolicyOutput | None = None
    for t in range(0, 41):  # a steady 4 req/s: whole-model stages, the slot's plan covers ~4 req/s
        out = _tick(pol, float(t), 4.0, 20, out)
    assert out is not None
    before = out.desired[PREFILL].replicas
    # The window's mean has barely moved (4.4 req/s, within its noise) but the last 5 s held 150 requests.
    nxt = _tick(pol, 41.0, 4.4, 150, out)
    assert nxt.desired[PREFILL].replicas > before
    assert any(r.startswith("prefill: scales up inside its 20 s slot") for r in nxt.reasons)
    assert any("over the last seconds" in r for r in nxt.reasons)
    # without the short window the same tick is held
    held = _tick(pol, 41.0, 4.4, None, out)
    assert held.desired[PREFILL].replicas == before
