"""The demo's operator-vs-model comparison: the demo's replay as an evaluate scenario, both policies
through evaluate's run_one, the live line and the report section."""

from __future__ import annotations

import numpy as np

from opscale.demo.compare import SideBySide, run_policy, scenario
from opscale.demo.report import comparison_lines
from opscale.demo.view import simulated_line
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
    whole = all(k.endswith("/model") for k in both.operator.mean_replicas)
    assert ("not granularity" in text) == whole  # llama3-8b: one GPU whole, the hybrid keeps it
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
