"""Forecast over replica start-up, the closed-loop correction (opscale.policy.adaptive) and pooled lengths
(opscale.policy.length_pool), and how the planner policies use them tick to tick."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opscale.errors import InvalidArgument
from opscale.model import get_preset, perf_model
from opscale.model.memory import usable_bytes
from opscale.model.startup import startup_s
from opscale.policy.adaptive import (
    C_MAX,
    C_MIN,
    HISTORY_S,
    Correction,
    Z,
    corrected,
    covered_rps,
    forecast,
    forecast_load,
    history_of,
    horizon_s,
    scaled,
    window_noise,
)
from opscale.policy.length_pool import pooled_lengths
from opscale.policy.lengths import LengthDist
from opscale.policy.model_level import ModelPolicy, plan_model
from opscale.policy.operator import OperatorPolicy
from opscale.policy.planner_loads import stage_loads
from opscale.policy.types import SLO, LoadWindow, PolicyInput, PolicyState, PoolKey, PoolPlan, Signal


def window(rps: float, ttft: float | None = None, tbt: float | None = None) -> LoadWindow:
    return LoadWindow(
        window_s=30.0,
        arrival_rate_rps=rps,
        input_tokens_mean=1000.0,
        output_tokens_mean=250.0,
        decode_tps=rps * 250.0,
        ttft_p99_ms=ttft,
        tbt_p99_ms=tbt,
        staleness_s={s: 0.0 for s in Signal},
    )


def test_a_flat_load_is_planned_as_it_is() -> None:
    fc = forecast([(float(t), 10.0) for t in range(20)], horizon_s=15.0)
    assert fc.rate_rps == pytest.approx(10.0) and fc.slope_rps_per_s == pytest.approx(0.0)


def test_a_rising_load_is_planned_for_where_it_will_be_when_replicas_are_ready() -> None:
    hist = [(float(t), 10.0 + 0.5 * t) for t in range(20)]  # +0.5 req/s per second, now 19.5
    fc = forecast(hist, horizon_s=12.0)
    assert fc.slope_rps_per_s == pytest.approx(0.5)
    assert fc.rate_rps == pytest.approx(19.5 + 0.5 * 12.0)


def test_spread_adds_headroom_and_a_falling_load_never_plans_below_now() -> None:
    # the rate swings by 2 req/s within a start-up of 10 s: that rise is planned for
    swing = [(float(t), 10.0 + (1.0 if t % 20 < 10 else -1.0)) for t in range(40)]
    fc = forecast(swing, horizon_s=10.0)
    assert fc.sigma_rps > 1.5 and fc.rate_rps >= 9.0 + Z * 1.5
    # a flicker faster than the start-up averages out before a replica is ready: no headroom
    flicker = [(float(t), 10.0 + (1.0 if t % 2 else -1.0)) for t in range(40)]
    assert forecast(flicker, horizon_s=10.0).sigma_rps == pytest.approx(0.0)
    falling = [(float(t), 30.0 - t) for t in range(20)]
    assert forecast(falling, horizon_s=10.0).rate_rps == pytest.approx(11.0)


def _windows(rate: Callable[[float], float], ticks: range) -> list[tuple[float, float]]:
    """What the decision service reads each second: the mean rate over the last 30 s."""
    return [(float(t), float(np.mean([rate(x) for x in np.linspace(t - 30.0, t, 301)]))) for t in ticks]


def test_past_a_peak_the_level_is_the_last_window_not_the_historys_mean() -> None:
    def hump(t: float) -> float:  # 100 → 150 req/s in a minute, then down to 104
        return 100.0 + 50.0 * t / 60.0 if t < 60.0 else 150.0 - 46.0 * (t - 60.0) / 60.0

    hist = _windows(hump, range(31, 151))
    now, mean = hist[-1][1], float(np.mean([r for _, r in hist]))
    fc = forecast(hist, horizon_s=6.0, window_s=30.0)
    assert mean > now + 25.0 and fc.slope_rps_per_s == 0.0
    assert fc.rate_rps <= now + 2.0 * math.sqrt(now / 30.0) + Z * fc.sigma_rps + 1e-9


def test_poisson_noise_of_the_window_gets_no_headroom_bursts_do() -> None:
    # A flat 20 req/s as the decision service sees it: every second, the rate over the last 30 s.
    rng = np.random.default_rng(7)
    per_s = rng.poisson(20.0, 150)
    flat = [(float(t), float(per_s[t - 30 : t].sum()) / 30.0) for t in range(30, 150)]
    raw = forecast(flat, horizon_s=15.0)
    assert raw.sigma_rps > 0.5  # as exact rates, the noise reads as a rise
    fc = forecast(flat, horizon_s=15.0, window_s=30.0)
    assert fc.slope_rps_per_s == 0.0  # no significant trend in a flat load
    assert fc.sigma_rps < 0.5 * raw.sigma_rps and fc.rate_rps < min(raw.rate_rps, 20.0 * 1.05)
    # A rise far beyond Poisson (10 → 30 req/s within the start-up) is a burst and keeps its headroom.
    bursty = [(float(t), 10.0 if t % 40 < 20 else 30.0) for t in range(120)]
    b = forecast(bursty, horizon_s=15.0, window_s=30.0)
    assert b.sigma_rps > 9.0 and b.rate_rps > 20.0 + Z * 9.0
    # A real ramp is still a trend with overlapping windows.
    ramp = [(float(t), 10.0 + 0.1 * t + (0.5 if t % 2 else -0.5)) for t in range(120)]
    assert forecast(ramp, horizon_s=10.0, window_s=30.0).slope_rps_per_s == pytest.approx(0.1, rel=0.05)


def test_the_forecast_load_is_central_with_the_burst_as_its_spread() -> None:
    bursty = [(float(t), 10.0 if t % 40 < 20 else 30.0) for t in range(120)]
    fc = forecast(bursty, horizon_s=15.0, window_s=30.0)
    now = bursty[-1][1]
    load = LoadWindow(window_s=30.0, arrival_rate_rps=now, input_tokens_mean=512, decode_tps=64 * now)
    planned = forecast_load(load, fc)
    assert planned.arrival_rate_rps == pytest.approx(fc.central_rps)
    assert planned.rate_spread_rps == pytest.approx(fc.sigma_rps)
    assert covered_rps(planned) == pytest.approx(fc.rate_rps)  # what the cadence holds the slot to
    assert planned.decode_tps == pytest.approx(64 * planned.arrival_rate_rps)  # the same lengths
    calm = forecast([(float(t), now) for t in range(20)], horizon_s=15.0)
    assert forecast_load(load, calm) is load  # a steady load: the window as measured
    with pytest.raises(InvalidArgument, match="rate_spread_rps"):
        LoadWindow(window_s=30.0, rate_spread_rps=-1.0)


def test_a_flat_loads_level_is_its_mean_on_either_side_of_the_last_window() -> None:
    # 20 req/s for two minutes, and a last window at 21 req/s: Poisson noise (2 standard errors of one
    # 30 s window are 1.7 req/s), not a rise. The level is the history's mean, below the last
    # window; the window's own estimate error is priced by the planners (planner_loads.rate_bound).
    hist = [*[(float(t), 20.0) for t in range(119)], (119.0, 21.0)]
    fc = forecast(hist, horizon_s=12.0, window_s=30.0)
    assert fc.slope_rps_per_s == 0.0 and fc.sigma_rps == pytest.approx(0.0, abs=0.05)
    assert fc.central_rps == pytest.approx(20.0, abs=0.05)
    load = LoadWindow(window_s=30.0, arrival_rate_rps=21.0, input_tokens_mean=512, decode_tps=64 * 21.0)
    assert forecast_load(load, fc).arrival_rate_rps == pytest.approx(fc.central_rps)
    # A last window beyond the noise is a rise the mean lags: the level keeps within noise of it.
    jump = [*hist[:-1], (119.0, 25.0)]
    assert forecast(jump, horizon_s=12.0, window_s=30.0).central_rps >= 25.0 - window_noise(25.0, 30.0) - 1e-9


def test_a_load_falling_into_a_lull_is_never_planned_below_zero() -> None:
    # Azure code's ramps end in empty minutes: a significant fall whose line is below zero now, and a
    # last window of one request. The plan is for what the window saw, not for a negative rate.
    fall = [(float(t), max(0.0, 30.0 - t)) for t in range(59)] + [(59.0, 1.0 / 30.0)]
    fc = forecast(fall, horizon_s=12.0, window_s=30.0)
    assert fc.slope_rps_per_s == 0.0 and fc.central_rps == pytest.approx(1.0 / 30.0)  # the line: -7 req/s
    load = LoadWindow(window_s=30.0, arrival_rate_rps=1.0 / 30.0, input_tokens_mean=512)
    planned = forecast_load(load, fc)
    assert planned.arrival_rate_rps == pytest.approx(1.0 / 30.0)
    assert planned.rate_spread_rps == pytest.approx(fc.sigma_rps) and fc.sigma_rps > 1.0  # the ramp's bursts


@given(
    st.lists(st.floats(0.0, 500.0), min_size=1, max_size=150),
    st.floats(0.5, 60.0),
    st.sampled_from([0.0, 1.0, 10.0, 30.0]),
)
def test_any_history_forecasts_a_load_the_planners_take(
    rates: list[float], h: float, window_s: float
) -> None:
    hist = [(float(t), r) for t, r in enumerate(rates)]
    fc = forecast(hist, horizon_s=h, window_s=window_s)
    assert fc.central_rps >= 0.0 and fc.sigma_rps >= 0.0 and fc.rate_rps >= fc.central_rps
    if window_s > 0.0:
        assert fc.central_rps >= rates[-1] - window_noise(rates[-1], window_s) - 1e-9
    load = LoadWindow(window_s=window_s or 30.0, arrival_rate_rps=rates[-1], input_tokens_mean=512)
    planned = forecast_load(load, fc)  # a valid window (no negative rate), at the forecast's centre
    if rates[-1] > 0.0:
        assert planned.arrival_rate_rps == pytest.approx(fc.central_rps)


def test_history_keeps_recent_finite_entries_and_survives_damaged_state() -> None:
    data = {"rates": [[0.0, 5.0], [100.0, 6.0], ["x", 1.0], [110.0, float("nan")], [115.0, -1.0], 3]}
    hist = history_of(data, 130.0, 7.0)
    assert hist == [(100.0, 6.0), (130.0, 7.0)]  # 0.0 is more than HISTORY_S before 130
    assert HISTORY_S >= 60.0
    assert history_of({"rates": "garbage"}, 1.0, 2.0) == [(1.0, 2.0)]


def test_horizon_is_the_start_up_of_the_largest_replica_in_force_on_its_fewest_gpus() -> None:
    perf = perf_model(get_preset("llama3-70b"), "H100")
    usable = usable_bytes(perf.gpu.memory_bytes)
    every = sum(perf.weights_bytes(op) for op in {"embedding", "attention", "ffn", "lm_head"})
    whole = startup_s("h100", every, math.ceil(every / usable))
    for gpus in (2, 4, 8):  # the shape in force does not move the horizon (nor the forecast with it)
        big = {
            PoolKey("decode", "model"): PoolPlan(2, 64, gpus),
            PoolKey("prefill", "attention"): PoolPlan(1, 8),
        }
        assert horizon_s(perf, big) == pytest.approx(whole)
    assert horizon_s(perf, {}) == pytest.approx(whole)  # nothing runs yet: a whole-model replica
    ffn = perf.weights_bytes("ffn")
    pools = {PoolKey("decode", "ffn"): PoolPlan(1, 64, 4), PoolKey("decode", "attention"): PoolPlan(3, 64, 2)}
    assert horizon_s(perf, pools) == pytest.approx(startup_s("h100", ffn, math.ceil(ffn / usable)))
    assert horizon_s(perf, pools) < whole  # operator replicas start sooner than a whole model


def test_correction_follows_observation_within_bounds_and_only_for_the_same_load() -> None:
    last = {"predicted": {"rps": 10.0, "ttft_ms": 500.0, "tbt_ms": 40.0, "since": 0.0}}
    c = corrected(last, window(10.0, ttft=750.0, tbt=40.0), 60.0, 45.0)
    assert c.prefill == pytest.approx(0.7 * 1.0 + 0.3 * 1.5) and c.decode == pytest.approx(1.0)
    # the plan has not been in force long enough for a window to see it alone: no update
    assert corrected(last, window(10.0, ttft=750.0, tbt=40.0), 30.0, 45.0) == Correction()
    # a different load: the prediction describes another load, no update
    assert corrected(last, window(15.0, ttft=750.0, tbt=40.0), 60.0, 45.0) == Correction()
    # bounded both ways, whatever was observed or stored
    damaged = {**last, "correction": {"prefill": 50.0, "decode": -3}}
    huge = corrected(damaged, window(10.0, 1e6, 1.0), 60.0, 45.0)
    assert huge.prefill == C_MAX and huge.decode == C_MIN
    assert Correction(1.25, 1.0).slo(SLO(2000.0, 100.0)) == SLO(1600.0, 100.0)
    assert Correction.from_json("garbage") == Correction()


def test_ttft_is_not_corrected_by_prompts_the_prediction_leaves_out() -> None:
    """The observed p99 TTFT covers every prompt; with 5% of prompts too long for the SLO on any
    configuration it is theirs, not the servable ones' the planner predicted: no TTFT update (TBT still)."""
    last = {"predicted": {"rps": 10.0, "ttft_ms": 500.0, "tbt_ms": 40.0, "since": 0.0}}
    seen = window(10.0, ttft=6000.0, tbt=60.0)
    many = corrected({"predicted": {**last["predicted"], "unservable": 0.05, "tail": 0.01}}, seen, 60.0, 45.0)
    assert many.prefill == 1.0 and many.decode == pytest.approx(0.7 + 0.3 * 1.5)
    few = corrected(
        {"predicted": {**last["predicted"], "unservable": 0.0005, "tail": 0.01}}, seen, 60.0, 45.0
    )
    assert few.prefill > 1.0  # a handful among 1,000 prompts cannot move the p99 far: compared


def test_operator_policy_forecasts_corrects_and_says_so() -> None:
    pol = OperatorPolicy.from_params({"model": "llama3-70b"})
    slo = SLO(2000.0, 100.0)
    state = PolicyState()
    current: dict[PoolKey, PoolPlan] = {}
    outs = []
    for t in range(0, 240, 4):
        rps = 4.0 + 0.02 * t
        out = pol.decide(
            PolicyInput(
                now_s=float(t),
                deployment="d",
                load=window(rps, tbt=60.0),
                current=current,
                slo=slo,
                state=state,
            )
        )
        state, current = out.state, dict(out.desired)
        outs.append(out)
    last = outs[-1]
    assert any(r.startswith("forecast: planned for") for r in last.reasons)
    assert any(r.startswith("closed-loop correction") for r in last.reasons)  # TBT observed above predicted
    corr = state.data["correction"]
    assert isinstance(corr, dict) and isinstance(corr["decode"], float) and corr["decode"] > 1.0
    rates = state.data["rates"]
    assert isinstance(rates, list) and len(rates) == HISTORY_S // 4 + 1  # both ends of the span


def test_the_model_baseline_runs_without_them_unless_asked() -> None:
    base = ModelPolicy.from_params({"model": "llama3-70b"})
    assert not base.params.forecast and not base.params.correction
    out = base.decide(
        PolicyInput(now_s=0.0, deployment="d", load=window(8.0), current={}, slo=SLO(2000.0, 100.0))
    )
    assert not any(r.startswith(("forecast", "closed-loop")) for r in out.reasons)
    assert "rates" not in out.state.data


def test_headroom_scales_the_planned_load() -> None:
    load = window(8.0)
    assert scaled(load, 1.5).arrival_rate_rps == 12.0 and scaled(load, 1.5).decode_tps == 3000.0
    pol = ModelPolicy.from_params({"model": "llama3-70b", "headroom": 1.0})
    out = pol.decide(PolicyInput(now_s=0.0, deployment="d", load=load, current={}, slo=SLO(2000.0, 100.0)))
    plain = ModelPolicy.from_params({"model": "llama3-70b"}).decide(
        PolicyInput(now_s=0.0, deployment="d", load=load, current={}, slo=SLO(2000.0, 100.0))
    )
    assert any("headroom" in r for r in out.reasons)
    assert out.predicted is not None and plain.predicted is not None
    assert (out.predicted.gpus or 0) >= (plain.predicted.gpus or 0)
    assert not math.isnan(out.predicted.watts or 0.0)


def test_correction_is_kept_per_form_and_charges_the_form_that_ran() -> None:
    last = {
        "predicted": {
            "rps": 10.0,
            "ttft_ms": 500.0,
            "tbt_ms": 40.0,
            "since": 0.0,
            "forms": {"prefill": "operator", "decode": "model"},
        }
    }
    c = corrected(last, window(10.0, ttft=1000.0, tbt=80.0), 60.0, 45.0)
    assert c.factor("prefill", "operator") == pytest.approx(1.3) and c.factor("prefill", "model") == 1.0
    assert c.factor("decode", "model") == pytest.approx(1.3) and c.factor("decode", "operator") == 1.0
    tight = c.slo(SLO(2000.0, 100.0), {"prefill": "operator", "decode": "model"})
    assert (tight.ttft_ms, tight.tbt_ms) == pytest.approx((2000.0 / 1.3, 100.0 / 1.3))
    assert c.slo(SLO(2000.0, 100.0), {"prefill": "model", "decode": "operator"}) == SLO(2000.0, 100.0)
    assert Correction.from_json(c.to_json()) == c
    # a state written before the forms were told apart: its factor stands for both forms
    old = Correction.from_json({"prefill": 1.5, "decode": 1.2})
    assert old.factor("prefill", "operator") == 1.5 and old.factor("decode", "operator") == 1.2


def test_a_mispredicted_operator_form_loses_to_whole_model_replicas() -> None:
    from opscale.policy.operator import plan_hybrid
    from opscale.sim.fixed import Steady, steady_trace
    from opscale.sim.observe import window_of

    load = Steady("llama3-70b", 8.0, "fixed", seconds=200.0)
    w = window_of(steady_trace(load, 0), 0.0, 200.0)
    plain = plan_hybrid(load.perf(), w, load.slo)
    assert plain.forms["prefill"] == "operator"  # 3 GPUs in operator pools against 4 whole
    # operator pools observed at twice their predicted TTFT: prefill goes back to whole-model replicas
    hurt = plan_hybrid(load.perf(), w, load.slo, correction=Correction(prefill_operator=2.0))
    assert hurt.forms["prefill"] == "model"
    # the same factor on whole-model replicas (not running) leaves the operator pools' plan as it was
    other = plan_hybrid(load.perf(), w, load.slo, correction=Correction(prefill=2.0))
    assert other.forms == plain.forms and other.prediction.gpus == plain.prediction.gpus


def test_lengths_are_pooled_over_the_recent_past_and_survive_damaged_state() -> None:
    short, long = LengthDist.fixed(1000.0), LengthDist.from_weighted([1000.0, 60_000.0], [0.98, 0.02])

    def window(d: LengthDist, rps: float = 5.0) -> LoadWindow:
        return LoadWindow(window_s=30.0, arrival_rate_rps=rps, input_tokens_mean=d.mean, input_tokens_dist=d)

    load, kept = pooled_lengths({}, window(long), 0.0, 300.0)
    assert load.inputs() == long  # the first window is the pool
    # 30 s later a window without a long prompt: two windows of 30 s, the older one decayed by e^(-0.1)
    load, kept = pooled_lengths({"lengths": kept}, window(short), 30.0, 300.0)
    share = load.inputs().share_above(10_000.0)
    assert share == pytest.approx(0.02 * math.exp(-0.1) / (1.0 + math.exp(-0.1)), rel=1e-3)
    assert load.arrival_rate_rps == 5.0 and load.input_tokens_mean == pytest.approx(load.inputs().mean)
    # a window without requests leaves the pool as it was; memory 0 is the window's own
    idle, again = pooled_lengths({"lengths": kept}, window(short, 0.0), 40.0, 300.0)
    assert again == kept and idle.inputs().share_above(10_000.0) == pytest.approx(share)
    assert pooled_lengths({"lengths": kept}, window(short), 60.0, 0.0)[0].inputs() == short
    for bad in ({"t": "x"}, {"t": 10.0, "in": [["a", 1]]}, {"t": 99.0, "in": [], "out": []}, 3):
        assert pooled_lengths({"lengths": bad}, window(short), 50.0)[0].inputs() == short


def test_the_pool_counts_every_prompt_once_whatever_the_tick() -> None:
    """The pool is a sample of the prompts seen: a first window weighs the prompts it held (one second's,
    five prompts, at a trace's first tick), a window that overlaps the last one pooled adds nothing, and
    the next that does not adds its own prompts. Pooled every second at the weight of the prompts since
    the last tick, the first window's prompts were counted again by the windows of the next 30 s."""
    short, long = LengthDist.fixed(1000.0), LengthDist.from_weighted([1000.0, 60_000.0], [0.98, 0.02])

    def window(d: LengthDist, rps: float = 5.0) -> LoadWindow:
        return LoadWindow(window_s=30.0, arrival_rate_rps=rps, input_tokens_mean=d.mean, input_tokens_dist=d)

    for tick in (1.0, 20.0):
        # the first tick's window holds one second of prompts (five), reported over 30 s
        _, first = pooled_lengths({}, window(long, 5.0 / 30.0), 1.0, 300.0)
        assert first["w"] == pytest.approx(5.0)
        kept, t = first, 1.0 + tick
        while t < 31.0:  # every window overlapping the pooled one (which it does not count) leaves it
            _, kept = pooled_lengths({"lengths": kept}, window(long), t, 300.0)
            assert kept == first
            t += tick
        _, kept = pooled_lengths({"lengths": kept}, window(short), t, 300.0)
        decayed = 5.0 * math.exp(-(t - 1.0) / 300.0)
        assert kept["w"] == pytest.approx(decayed + 150.0) and kept["t"] == t
        share = LengthDist.from_json(kept["in"]).share_above(10_000.0)
        assert share == pytest.approx(0.02 * decayed / (decayed + 150.0))
    # a pool kept by a version without the weight is taken as it was: at full weight
    _, kept = pooled_lengths({}, window(long), 0.0, 300.0)
    old = {k: v for k, v in kept.items() if k != "w"}
    assert pooled_lengths({"lengths": old}, window(short, 0.0), 10.0, 300.0)[1] == old  # idle: kept as it was
    load, _ = pooled_lengths({"lengths": old}, window(short), 30.0, 300.0)
    assert load.inputs().share_above(10_000.0) == pytest.approx(
        0.02 * math.exp(-0.1) / (math.exp(-0.1) + 0.1), rel=1e-3
    )


def test_lengths_that_grow_count_at_once_and_the_pool_only_holds_them_up() -> None:
    """Fast up: a window longer than the pool is planned as the window (the pool alone lagged Azure conv's
    growing outputs and starved decode of KV); slow down: a shorter one keeps the pool's tail."""
    short, longer = LengthDist.fixed(120.0), LengthDist.from_weighted([200.0, 400.0], [0.5, 0.5])

    def window(d: LengthDist) -> LoadWindow:
        return LoadWindow(
            window_s=30.0, arrival_rate_rps=5.0, output_tokens_mean=d.mean, output_tokens_dist=d
        )

    _, kept = pooled_lengths({}, window(short), 0.0, 300.0)
    for t in range(20, 620, 20):  # ten minutes of short outputs
        _, kept = pooled_lengths({"lengths": kept}, window(short), float(t), 300.0)
    load, kept = pooled_lengths({"lengths": kept}, window(longer), 630.0, 300.0)
    assert load.outputs().mean == pytest.approx(longer.mean)  # not the pool's ~139
    assert LengthDist.from_json(kept["out"]).mean < 150.0  # the pool itself moves slowly (30 s of 10 min)
    load, _ = pooled_lengths({"lengths": kept}, window(short), 660.0, 300.0)
    assert load.outputs().mean > short.mean and load.outputs().max == pytest.approx(400.0)


def test_both_planners_plan_with_the_pooled_lengths() -> None:
    slo = SLO(2000.0, 100.0)
    long = LengthDist.from_weighted([1000.0, 60_000.0], [0.97, 0.03])
    for pol in (
        ModelPolicy.from_params({"model": "llama3-70b"}),
        OperatorPolicy.from_params({"model": "llama3-70b"}),
    ):
        first = LoadWindow(
            window_s=30.0,
            arrival_rate_rps=2.0,
            input_tokens_mean=long.mean,
            input_tokens_dist=long,
            output_tokens_mean=200.0,
            staleness_s={s: 0.0 for s in Signal},
        )
        out = pol.decide(PolicyInput(now_s=0.0, deployment="d", load=first, current={}, slo=slo))
        short = LoadWindow(
            window_s=30.0,
            arrival_rate_rps=2.0,
            input_tokens_mean=1000.0,
            output_tokens_mean=200.0,
            staleness_s={s: 0.0 for s in Signal},
        )
        after = pol.decide(
            PolicyInput(
                now_s=20.0, deployment="d", load=short, current=dict(out.desired), slo=slo, state=out.state
            )
        )
        pooled = after.state.data["lengths"]
        assert isinstance(pooled, dict) and LengthDist.from_json(pooled["in"]).max == pytest.approx(60_000.0)


_dists = st.lists(st.tuples(st.integers(1, 200_000), st.floats(0.01, 1.0)), min_size=1, max_size=12).map(
    lambda pts: LengthDist.from_weighted([float(t) for t, _ in pts], [w for _, w in pts])
)


@given(_dists, _dists, st.floats(0.001, 0.999))
def test_the_upper_envelope_takes_the_longer_length_at_every_quantile(
    a: LengthDist, b: LengthDist, q: float
) -> None:
    u = a.upper(b)
    # the compression merges lengths within 19% (SLICE_RATIO) into their mean: allow that much
    assert u.quantile(q) >= max(a.quantile(q), b.quantile(q)) / 1.19 - 1e-9
    assert u.mean >= max(a.mean, b.mean) * (1 - 1e-9)
    assert u.max == pytest.approx(max(a.max, b.max), rel=0.19)


def test_the_ttft_percentile_holds_under_each_estimate_the_envelope_merges() -> None:
    """The pool holds 2% of 30k-token prompts (servable only on 8 GPUs at a 2 s TTFT) and 0.5% of 60k
    (servable nowhere); the window holds 5% of 60k. Their envelope moves the 30k band past the longest
    servable prompt, so over the servable prompts of the envelope the p99 is a 1k prompt and 4-GPU
    prefill replicas look enough. Under the pool's own estimate 2% of servable prompts are 30k: the
    percentile must hold there too."""
    p, slo = perf_model(get_preset("llama3-70b"), "H100"), SLO(2000.0, 100.0)
    pool = LengthDist.from_weighted([1000.0, 30_000.0, 60_000.0], [0.975, 0.02, 0.005])
    now = LengthDist.from_weighted([1000.0, 60_000.0], [0.95, 0.05])
    out = LengthDist.fixed(200.0)
    window = LoadWindow(
        window_s=30.0,
        arrival_rate_rps=2.0,
        input_tokens_mean=now.mean,
        input_tokens_dist=now,
        output_tokens_mean=out.mean,
        output_tokens_dist=out,
        staleness_s={s: 0.0 for s in Signal},
    )
    state = {"lengths": {"t": 0.0, "in": pool.to_json(), "out": out.to_json()}}
    load, _ = pooled_lengths(state, window, 1.0, 300.0)  # type: ignore[arg-type]
    assert load.inputs().share_above(40_000.0) == pytest.approx(0.05) and len(load.input_tokens_also) == 2
    envelope = replace(load, input_tokens_also=())
    checked, envelope_only = stage_loads(p, load, slo), stage_loads(p, envelope, slo)
    assert envelope_only.prefill.length_q < 2000 < 25_000 < checked.prefill.length_q
    assert checked.prefill.rate_rps == envelope_only.prefill.rate_rps  # the load is the envelope's alone
    prefill = PoolKey("prefill", "model")
    assert plan_model(p, envelope, slo).pools[prefill].gpus_per_replica == 4
    assert plan_model(p, load, slo).pools[prefill].gpus_per_replica == 8
