"""The demo's operator-vs-model comparison: the demo's replay as an evaluate scenario, both policies
through evaluate's run_one, the live line and the report section."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from opscale.demo.compare import PolicyRun, SideBySide, run_policy, scenario
from opscale.demo.report import comparison_lines, matched_row
from opscale.demo.view import model_level, simulated_line
from opscale.sim.difference import WHOLE_THROUGHOUT
from opscale.sim.experiment import build_trace
from opscale.sim.traces import load_trace, scale_time


def test_scenario_is_the_window_the_demo_replays() -> None:
    sc = scenario("azure-conv", "llama3-8b", 20.0, 30.0, 40.0)
    demo = scale_time(load_trace("azure-conv"), 20.0).window(30.0, 70.0)
    got = build_trace(sc)
    assert np.array_equal(got.arrival_s, demo.arrival_s)
    assert np.array_equal(got.input_tokens, demo.input_tokens)


def test_both_policies_side_by_side() -> None:
    sc = scenario("azure-conv", "llama3-8b", 20.0, 30.0, 15.0)
    alone = SideBySide(operator=run_policy(sc, "operator"), model=run_policy(sc, "model"))
    assert alone.equal() is None and "equal attainment" not in alone.sentence()
    both = SideBySide(alone.operator, alone.model, model_sweep=(run_policy(sc, "model", 0.5),))
    op, ml = both.operator.metrics, both.model.metrics
    assert (op.policy, ml.policy) == ("operator", "model")
    assert len(both.operator.gpus) >= 15 and both.gpus_at(1.0)[1] == both.model.gpus[0]
    assert both.gpus_at(10_000.0) == (None, None)
    text = both.sentence()
    assert f"{op.mean_gpus:.1f} vs {ml.mean_gpus:.1f} GPUs" in text
    assert "decode/model" in text  # where model-level's GPUs went
    whole = all(v < WHOLE_THROUGHOUT for v in both.operator.breakdown["operator_share"].values())
    assert ("not granularity" in text) == whole  # llama3-8b: one GPU whole, the hybrid keeps it
    assert "Where it comes from: " in text  # the sentence evaluate's report gives
    assert ("fewer" in text) == (op.gpu_hours < ml.gpu_hours)
    eq = both.equal()  # read on the model's cost curve (two headrooms) at the attainment both reach
    assert eq is not None and f"at equal attainment ({100 * eq.level:.1f}%)" in text
    assert eq.level == min(
        0.99, op.slo_attainment, max(r.metrics.slo_attainment for r in (*both.model_sweep, both.model))
    )
    lines = comparison_lines(both)
    assert any(line.startswith("| operator |") for line in lines) and text in lines
    assert any(line.startswith("| model (headroom 0.5) |") for line in lines)
    assert "operator" in simulated_line(both, 5.0).plain
    assert f"×{eq.ratio:.2f}" in simulated_line(both, 5.0).plain
    assert "×" not in simulated_line(alone, 5.0).plain  # without the sweep: no reading at equal attainment
    assert "running" in simulated_line(None, 5.0).plain
    assert "did not finish" in " ".join(comparison_lines(None))


def test_model_level_is_set_beside_operator_level_at_no_less_attainment() -> None:
    """The live view and the report put beside operator-level the model-level run that attains at least
    as much, at the fewest GPU-hours: GPUs at lower attainment do not compare."""
    sc = scenario("azure-conv", "llama3-8b", 20.0, 30.0, 15.0)
    real = run_policy(sc, "model")

    def run(headroom: float, attainment: float, gpu_hours: float, gpus: int) -> PolicyRun:
        m = replace(real.metrics, headroom=headroom, slo_attainment=attainment, gpu_hours=gpu_hours)
        return PolicyRun(m, (gpus,) * 15, real.mean_replicas, real.breakdown)

    op = run(0.0, 1.0, 0.30, 7)
    default, low, high, best = (
        run(0.0, 0.967, 0.25, 5),
        run(0.25, 0.99, 0.28, 6),
        run(1.0, 1.0, 0.50, 12),
        run(0.5, 1.0, 0.40, 9),
    )
    both = SideBySide(op, default, model_sweep=(low, high, best))
    assert both.matched() is best
    assert both.gpus_at(3.0, best) == (7, 9) and both.gpus_at(3.0) == (7, 5)
    gpus, label = model_level(both)
    row = SimpleNamespace(t_s=3.0, gpus_model_level=4)
    assert gpus(row) == 9  # type: ignore[arg-type]
    assert "headroom 0.5" in label and "100.0% in SLO" in label
    assert matched_row(both) == [
        "| mean GPUs, model-level simulated at ≥ operator-level's attainment (headroom 0.5, 100.0% in SLO) "
        f"| {real.metrics.mean_gpus:.1f} |"
    ]
    # none attains as much: the one that attains most
    assert SideBySide(op, default, model_sweep=(low,)).matched() is low
    # before the simulated runs are in: the raw planner, said so
    gpus, label = model_level(None)
    assert gpus(row) == 4 and "raw" in label  # type: ignore[arg-type]
    assert matched_row(None) == []
