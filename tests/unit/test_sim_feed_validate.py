"""The signal feed (ingest's writes, the decision loop's read) and the model-validation harness."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from opscale.policy.model_level import plan_model
from opscale.policy.planner_stage import predict
from opscale.policy.types import Signal
from opscale.sim.experiment import Scenario, build
from opscale.sim.feed import SignalFeed
from opscale.sim.fixed import Steady, steady_trace
from opscale.sim.observe import window_of
from opscale.sim.run import simulate
from opscale.sim.validate import PLAN, _measured_load, validate_point


def test_window_reports_the_pushed_rate_and_lengths() -> None:
    from opscale.policy.types import PoolKey

    pools = (PoolKey("prefill", "model"), PoolKey("decode", "model"))
    feed = SignalFeed("d", pools, window_s=30.0)
    # 5 arrivals per second for 40 s, prompt 100 / output 20 tokens.
    for sec in range(40):
        feed.push([feed.arrival(sec + 0.1 * k, 100, 20) for k in range(5)], float(sec + 1))
    w = feed.window(40.0)
    assert abs(w.arrival_rate_rps - 5.0) < 1e-9
    assert abs(w.input_tokens_mean - 100) < 1e-6 and abs(w.output_tokens_mean - 20) < 1e-6
    assert w.age_s(Signal.ARRIVAL_RATE) is not None


def test_per_pool_series_do_not_change_the_decisions() -> None:
    """The shipped policies read deployment-wide fields only, so leaving the per-pool series out (the
    default, for speed) gives the same run."""
    sc = Scenario(trace="steady", model="mixtral-8x7b")
    trace = steady_trace(Steady("mixtral-8x7b", 3.0, "fixed:512/64", seconds=90.0), seed=5)
    for policy in ("operator", "pd"):
        spec, initial = build(sc, policy, trace)
        a = simulate(spec, trace, initial, pool_signals=False)
        b = simulate(spec, trace, initial, pool_signals=True)
        assert np.array_equal(a.gpus, b.gpus)
        assert np.array_equal(a.requests.finish_s, b.requests.finish_s, equal_nan=True)


def test_validation_point_measures_the_plan_it_predicts() -> None:
    load = Steady("mixtral-8x7b", 4.0, "fixed:512/64", seconds=120.0, warmup_s=30.0)
    point = validate_point(load, "model", seeds=(0, 1))
    low, high = min(point.ttft_sim_seeds_ms), max(point.ttft_sim_seeds_ms)
    assert len(point.ttft_sim_seeds_ms) == 2 and low <= point.ttft_sim_ms <= high
    assert point.gpus > 0 and point.oracle_gpus is not None and point.oracle_gpus <= point.gpus
    assert point.ttft_sim_ms > 0 and point.tbt_sim_ms > 0
    # The queue and residency models predict the simulation they plan for, within the validation's band.
    assert abs(point.ttft_error) < 0.3 and abs(point.tbt_error) < 0.3
    assert point.meets_slo


def test_measured_p99_pools_the_requests_of_every_trace() -> None:
    from opscale.sim.fixed import pooled_p99

    quiet, bursty = np.full(990, 100.0), np.concatenate([np.full(900, 100.0), np.full(100, 5000.0)])
    # one bursty trace in two: the pooled p99 is the bursty trace's tail, not the mean of the two p99s
    assert pooled_p99([quiet, bursty]) == 5000.0
    assert np.mean([np.percentile(quiet, 99), np.percentile(bursty, 99)]) == 2550.0
    assert pooled_p99([quiet, np.array([math.inf] * 30)]) == math.inf
    assert pooled_p99([]) == 0.0


def test_p99_among_rejected_requests_is_infinite_not_nan() -> None:
    import warnings

    from opscale.sim.fixed import _p99

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the user's terminal either
        assert _p99(np.array([1.0] * 98 + [math.inf] * 2)) == math.inf
        assert _p99(np.array([1.0] * 100)) == 1.0
    assert _p99(np.array([])) == 0.0


def test_validation_without_the_oracle_says_so() -> None:
    from opscale.sim.validate import markdown, summary

    load = Steady("mixtral-8x7b", 4.0, "fixed:512/64", seconds=120.0, warmup_s=30.0)
    point = validate_point(load, "model", seeds=(0,), with_oracle=False)
    assert not point.oracle_searched and point.oracle_gpus is None and math.isnan(point.oracle_ratio)
    assert point.gpus > 0 and point.ttft_sim_ms > 0
    rows = [point.to_json()]
    table = markdown(rows)
    assert "not searched" in table and "nan" not in table
    s = summary(rows)
    assert s["oracle_searched"] == 0 and s["oracle_infeasible"] == 0 and s["meets_slo"] == 1
    assert point.meets_slo_pooled and point.planned_within_slo
    assert s["meets_slo_pooled"] == 1 and s["planned_past_slo"] == 0 and s["meets_slo_pooled_as_planned"] == 1


def test_the_slo_is_counted_on_every_trace_over_the_traces_pooled_and_apart_where_planned_past() -> None:
    from opscale.sim.validate import markdown, summary

    load = Steady("mixtral-8x7b", 4.0, "fixed:512/64", seconds=120.0, warmup_s=30.0)
    base = validate_point(load, "model", seeds=(0,), with_oracle=False).to_json()
    rows = [
        base,  # met on every trace
        {**base, "meets_slo": False},  # one trace's p99 past the SLO, the traces pooled within it
        {**base, "meets_slo": False, "meets_slo_pooled": False},
        {**base, "meets_slo": False, "meets_slo_pooled": False, "planned_within_slo": False},
    ]
    s = summary(rows)
    assert (s["meets_slo"], s["meets_slo_pooled"]) == (1, 2)
    assert (s["planned_past_slo"], s["meets_slo_pooled_as_planned"]) == (1, 2)
    assert s["per_planner"]["model"]["meets_slo_pooled"] == 2
    cells = [line.split(" | ")[-2] for line in markdown(rows).splitlines()[2:]]
    assert cells == ["yes", "pooled", "NO", "NO (planned past)"]


def test_a_plan_its_planner_predicts_past_the_slo_is_marked_so() -> None:
    from opscale.policy.planner_loads import fastest_prefill_ms

    # A 64k-token prompt within 10% of its prefill alone on a whole 8-GPU replica: servable, but not by
    # operator pools, whose 8-GPU attention and FFN replicas share no node and hand off over the network.
    probe = Steady("llama3-70b", 0.2, "fixed:65536/16")
    slo = 1.1 * fastest_prefill_ms(probe.perf(), 65536)
    load = replace(probe, ttft_ms=slo, seconds=60.0, warmup_s=10.0)
    point = validate_point(load, "operator", seeds=(0,), with_oracle=False)
    assert point.unservable == 0.0
    assert not point.planned_within_slo and point.ttft_plan_ms > slo
    assert not point.meets_slo and not point.meets_slo_pooled
    whole = validate_point(load, "model", seeds=(0,), with_oracle=False)
    assert whole.planned_within_slo


def test_validate_command_runs_without_the_oracle() -> None:
    from typer.testing import CliRunner

    from opscale.cli.main import app

    out = CliRunner().invoke(
        app, ["validate", "--quick", "--model", "qwen2-57b-a14b", "--no-oracle", "--workers", "1"]
    )
    assert out.exit_code == 0, out.output
    assert "oracle not searched (--no-oracle)" in out.output
    assert "not searched" in out.output.split("p99 TTFT within")[0]


def test_a_plan_predicted_again_on_its_own_window_gives_its_own_prediction() -> None:
    """``predict`` prices a fixed plan with the planner's own model: on the window the plan was made
    from it reproduces the plan's prediction (every planner, operator paths and hybrids included), and
    at a heavier load of the same lengths it predicts a slower TTFT."""
    for model, rate, mix in (("llama3-70b", 8.0, "fixed"), ("qwen2-57b-a14b", 16.0, "sharegpt")):
        load = Steady(model, rate, mix, seconds=120.0)
        perf = load.perf()
        window = window_of(steady_trace(load, 0), 0.0, load.seconds)
        for planner, plan_of in PLAN.items():
            plan = plan_of(perf, window, load.slo)
            ttft, tbt = predict(perf, plan, window, load.slo)
            assert math.isclose(ttft, plan.prediction.ttft_ms or math.inf, rel_tol=1e-12), planner
            assert math.isclose(tbt, plan.prediction.tbt_ms or math.inf, rel_tol=1e-12), planner
            heavier = replace(window, arrival_rate_rps=window.arrival_rate_rps * 1.05)
            assert predict(perf, plan, heavier, load.slo)[0] > ttft, planner


def test_the_prediction_judged_is_at_the_load_the_traces_carried() -> None:
    load = Steady("mixtral-8x7b", 4.0, "fixed:512/64", seconds=120.0, warmup_s=30.0)
    measured = [steady_trace(load, s).window(30.0, 120.0) for s in (0, 1)]
    window = _measured_load(load, (0, 1))
    assert window.arrival_rate_rps == sum(len(t) for t in measured) / 180.0
    point = validate_point(load, "model", seeds=(0, 1), with_oracle=False)
    plan = plan_model(load.perf(), window_of(steady_trace(load, 0), 0.0, 120.0), load.slo)
    assert point.ttft_plan_ms == plan.prediction.ttft_ms
    assert point.ttft_pred_ms == predict(load.perf(), plan, window, load.slo)[0]
    assert point.ttft_pred_ms != point.ttft_plan_ms  # two windows, two loads
