"""Prefill is sized for the measured load's upper bound and predicted at the measured load
(``opscale.policy.planner_loads``, "Estimation error")."""

from __future__ import annotations

import dataclasses
import math

import pytest

from opscale.model import get_preset, perf_model
from opscale.policy.hybrid import whole_model_unit
from opscale.policy.model_level import plan_model
from opscale.policy.planner_loads import ESTIMATE_Z, fastest_prefill_ms, sized_rate, stage_loads
from opscale.policy.planner_prefill import plan_prefill, ttft_quantile_ms
from opscale.policy.prefill_queue import PrefillLoad
from opscale.policy.types import SLO, Limits, LoadWindow
from opscale.sim.fixed import Steady, steady_trace
from opscale.sim.observe import window_of

P70 = perf_model(get_preset("llama3-70b"), "H100")


def test_the_sized_rate_is_the_upper_bound_of_the_work_estimate() -> None:
    one = ((1024, 1.0),)  # one length: every prompt is the same work, only the count is random
    assert sized_rate(P70, 20.0, 240.0, one) == pytest.approx(20.0 * (1 + ESTIMATE_Z / math.sqrt(4800)))
    two = ((512, 0.9), (8192, 0.1))
    w = [fastest_prefill_ms(P70, n) for n, _ in two]
    mean = 0.9 * w[0] + 0.1 * w[1]
    scv = (0.9 * w[0] ** 2 + 0.1 * w[1] ** 2) / mean**2 - 1
    want = 20.0 * (1 + ESTIMATE_Z * math.sqrt((1 + scv) / 4800))
    assert sized_rate(P70, 20.0, 240.0, two) == pytest.approx(want)
    assert sized_rate(P70, 20.0, 240.0, two) > sized_rate(P70, 20.0, 240.0, one)  # variable work: less known
    assert sized_rate(P70, 20.0, 2400.0, two) < sized_rate(P70, 20.0, 240.0, two)  # more seen: closer
    assert sized_rate(P70, 0.0, 240.0, two) == 0.0
    assert sized_rate(P70, 0.5, 1.0, two) == pytest.approx(1.0)  # half a prompt seen: at most twice


def test_a_forecast_burst_joins_the_estimate_error_in_quadrature() -> None:
    # Two independent errors on the rate the plan must carry: the window's estimate (σ_e) and the
    # forecast's rise within the start-up (σ_h). Their sum's 95% bound is λ + Z·√(σ_e² + σ_h²), below
    # planning each bound on top of the other.
    one = ((1024, 1.0),)
    sigma_e = 20.0 / math.sqrt(4800)
    assert sized_rate(P70, 20.0, 240.0, one, 0.0) == sized_rate(P70, 20.0, 240.0, one)
    both = sized_rate(P70, 20.0, 240.0, one, 2.0)
    assert both == pytest.approx(20.0 + ESTIMATE_Z * math.hypot(sigma_e, 2.0))
    assert both < sized_rate(P70, 20.0 + ESTIMATE_Z * 2.0, 240.0, one)  # the linear sum
    assert both > 20.0 + ESTIMATE_Z * 2.0  # and above the burst's bound alone
    # The window carries the spread to both stages, scaled to the servable share like the rate.
    window = LoadWindow(window_s=60.0, arrival_rate_rps=10.0, input_tokens_mean=2048, output_tokens_mean=256)
    calm = stage_loads(P70, window, SLO(ttft_ms=2000, tbt_ms=100))
    gusty = stage_loads(P70, dataclasses.replace(window, rate_spread_rps=1.5), SLO(ttft_ms=2000, tbt_ms=100))
    assert gusty.prefill.rate_rps == calm.prefill.rate_rps  # predicted at the same (central) rate
    assert gusty.prefill.sized_rps == pytest.approx(sized_rate(P70, 10.0, 60.0, calm.prefill.lengths, 1.5))
    assert gusty.decode.rate_rps == calm.decode.rate_rps and gusty.decode.sized_rps > calm.decode.sized_rps


def test_the_window_sets_the_sized_rate() -> None:
    window = LoadWindow(window_s=60.0, arrival_rate_rps=10.0, input_tokens_mean=2048, output_tokens_mean=256)
    pre = stage_loads(P70, window, SLO(ttft_ms=2000, tbt_ms=100)).prefill
    assert pre.sized_rps == pytest.approx(sized_rate(P70, pre.rate_rps, 60.0, pre.lengths))
    assert pre.sizing.rate_rps == pre.sized_rps and pre.sizing.sized_rps is None
    exact = dataclasses.replace(pre, sized_rps=None)
    assert exact.sizing is exact


def test_prefill_is_sized_at_the_bound_and_predicted_at_the_measured_rate() -> None:
    # llama3-70b, 2,048-token prompts at 19/s: sized as measured, five 2-GPU replicas at ρ 0.89 (the
    # busy cap is 0.9); 20 s of window (380 prompts) put the bound 8% higher, which takes a sixth.
    unit = whole_model_unit(P70, "prefill")
    measured = PrefillLoad(19.0, ((2048, 1.0),), (1.0,), 0.99)
    sized = dataclasses.replace(measured, sized_rps=sized_rate(P70, 19.0, 20.0, measured.lengths))
    exact = plan_prefill(P70, [unit], measured, 2000.0, Limits())
    bounded = plan_prefill(P70, [unit], sized, 2000.0, Limits())
    assert bounded.met and exact.met
    assert bounded.gpus == exact.gpus + 2
    opts = list(bounded.chosen.values())
    path = [(unit, opts[0])]
    assert ttft_quantile_ms(P70, path, sized.sizing, lambda n: 0.0) <= 2000.0  # holds at the bound …
    assert bounded.latency_ms == pytest.approx(ttft_quantile_ms(P70, path, measured, lambda n: 0.0))  # …
    assert bounded.latency_ms < exact.latency_ms  # predicted at the rate measured
    assert any("upper 95% bound" in n for n in bounded.notes) and not exact.notes


def test_requests_that_all_fit_leave_no_unservable_share() -> None:
    """Every request fits and is fast enough: no share is reported unservable, not even a rounding's."""
    load = Steady("llama3-70b", 20.0, "sharegpt", seconds=240.0)
    plan = plan_model(load.perf(), window_of(steady_trace(load, 0), 0.0, 240.0), load.slo)
    assert plan.prediction.unservable_fraction == 0.0
    assert not any("cannot meet the SLO on any configuration" in r for r in plan.reasons)
