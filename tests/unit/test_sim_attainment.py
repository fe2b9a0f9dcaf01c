"""Equal-attainment reading (opscale.sim.attainment), the evaluate matrix's scenarios, and the oracle
cache keyed by the physics version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opscale.errors import InvalidArgument
from opscale.sim import evaluate
from opscale.sim.attainment import Point, compare, frontier, gpu_hours_at
from opscale.sim.experiment import Scenario, build, build_trace
from opscale.sim.mixes import LONG_RANGE


def test_frontier_drops_points_that_cost_more_and_attain_less() -> None:
    pts = [Point(0.0, 0.90, 10.0), Point(0.1, 0.85, 11.0), Point(0.25, 0.97, 12.0), Point(0.5, 0.99, 14.0)]
    assert [p.headroom for p in frontier(pts)] == [0.0, 0.25, 0.5]


def test_gpu_hours_read_between_and_beyond_the_frontier() -> None:
    pts = [Point(0.0, 0.90, 10.0), Point(0.25, 0.97, 12.0), Point(0.5, 0.99, 14.0)]
    # 0.98 is halfway from 0.97 to 0.99: 12 + 0.5 · (14 − 12) = 13.
    assert gpu_hours_at(pts, 0.98) == pytest.approx(13.0)
    assert gpu_hours_at(pts, 0.97) == pytest.approx(12.0)
    assert gpu_hours_at(pts, 0.5) == 10.0  # the cheapest setting already does better
    assert gpu_hours_at(pts, 0.995) is None  # no setting reaches it
    assert gpu_hours_at([], 0.9) is None


def test_compare_reads_both_at_the_highest_common_attainment() -> None:
    points = {
        "operator": [Point(0.0, 0.995, 9.0)],
        "model": [Point(0.0, 0.90, 8.0), Point(0.5, 0.98, 12.0)],
    }
    c = compare(points, "operator", "model")
    assert c is not None
    # Model reaches 98% at most, so both are read at 98%: operator's only point (9) vs model's 12.
    assert c.level == pytest.approx(0.98)
    assert c.gpu_hours == {"operator": 9.0, "model": 12.0}
    assert c.ratio == pytest.approx(0.75)
    assert "25.0% fewer" in c.sentence("operator", "model")
    # Capped at 99% when both go beyond.
    both = {"operator": [Point(0.0, 1.0, 9.0)], "model": [Point(0.0, 1.0, 10.0)]}
    assert compare(both, "operator", "model").level == 0.99  # type: ignore[union-attr]
    assert compare({"operator": points["operator"]}, "operator", "model") is None
    assert c.kwh is None  # no point carries energy


def test_energy_is_read_on_its_own_curve_at_the_same_level() -> None:
    # Model: headroom 0.5 attains 98% at 12 GPU-h and 6 kWh, headroom 1 also 98% at 14 GPU-h but 5 kWh
    # (busy less): energy at 98% is the least a setting spends, 5 kWh, read on the kWh frontier.
    points = {
        "operator": [Point(0.0, 0.995, 9.0, 4.0)],
        "model": [Point(0.0, 0.90, 8.0, 4.5), Point(0.5, 0.98, 12.0, 6.0), Point(1.0, 0.98, 14.0, 5.0)],
    }
    c = compare(points, "operator", "model")
    assert c is not None and c.kwh == {"operator": 4.0, "model": 5.0}
    assert "energy 4.00 vs 5.00 kWh, 20.0% less" in c.sentence("operator", "model")
    partial = {**points, "model": [*points["model"], Point(2.0, 0.99, 20.0)]}  # one run without energy
    assert compare(partial, "operator", "model").kwh is None  # type: ignore[union-attr]


def test_long_prompt_scenario_keeps_arrivals_and_redraws_lengths() -> None:
    base = Scenario("azure-conv", duration_s=600.0)
    long = evaluate.long_prompt("llama3-70b", duration_s=600.0)
    a, b = build_trace(base), build_trace(long)
    assert np.array_equal(a.arrival_s, b.arrival_s)  # rate_scale 1: the trace's own arrivals
    # The long-tail mix: ≥ 5% of prompts over 16k, none past its 128k ceiling.
    assert (b.input_tokens > LONG_RANGE[0]).mean() >= 0.05
    assert b.input_tokens.max() <= LONG_RANGE[1]
    assert "lengths=longtail" in long.label and long.label != base.label
    assert np.array_equal(build_trace(long).input_tokens, b.input_tokens)  # deterministic


def test_matrices_cover_every_model_and_the_long_prompt_scenario() -> None:
    full = evaluate.full_matrix()
    assert {s.model for s in full} == set(evaluate.MODELS)
    assert {s.model for s in full if s.lengths == evaluate.LONG_PROMPTS} == set(evaluate.MODELS)
    quick = evaluate.quick_matrix()
    assert {s.model for s in quick} == set(evaluate.MODELS)
    assert all(s.duration_s == 600.0 for s in quick)


def test_headroom_reaches_the_planner_and_only_planners_take_it() -> None:
    sc = Scenario("azure-conv", duration_s=120.0)
    trace = build_trace(sc)
    for policy in ("model", "operator"):
        spec, _ = build(sc, policy, trace, headroom=0.25)
        assert spec.params["headroom"] == 0.25
    with pytest.raises(InvalidArgument, match="headroom"):
        build(sc, "pd", trace, headroom=0.25)
    assert evaluate.run_headrooms("pd", evaluate.SWEEP) == [0.0]
    assert evaluate.run_headrooms("model", (0.5, 0.1)) == [0.0, 0.1, 0.5]
    assert evaluate.run_headrooms("operator", (0.5,), sweep_policies=("model",)) == [0.0]


def test_the_operator_sweep_includes_its_forecast_off_and_only_it_forecasts() -> None:
    assert evaluate.run_settings("operator", (0.5,)) == [(0.0, False), (0.0, True), (0.5, True)]
    assert evaluate.run_settings("operator", (0.0,)) == [(0.0, True)]  # no sweep: defaults only
    assert evaluate.run_settings("model", (0.5,)) == [(0.0, True), (0.5, True)]
    sc = Scenario("azure-conv", duration_s=120.0)
    trace = build_trace(sc)
    spec, _ = build(sc, "operator", trace, forecast=False)
    assert spec.params["forecast"] is False
    with pytest.raises(InvalidArgument, match="forecast"):
        build(sc, "model", trace, forecast=False)
    off = {"headroom": 0.0, "forecast": False}
    assert not evaluate.is_default(off) and evaluate.is_default({"headroom": 0.0, "forecast": None})
    assert evaluate.setting_label(0.0, False) == " forecast off" and evaluate.setting_label(0.0, True) == ""


def test_oracle_cache_is_dropped_when_the_physics_changes(tmp_path: Path) -> None:
    f = tmp_path / "cache.json"
    evaluate.write_cache(f, {"k": 3.0})
    assert evaluate.read_cache(f) == {"k": 3.0}
    doc = json.loads(f.read_text())
    assert doc["physics"] == evaluate.physics_version() and len(doc["physics"]) == 16
    f.write_text(json.dumps({**doc, "physics": "0" * 16}))
    assert evaluate.read_cache(f) == {}
    f.write_text(json.dumps({"k": 3.0}))  # the old, unversioned format
    assert evaluate.read_cache(f) == {}
    f.write_text("{not json")
    assert evaluate.read_cache(f) == {}


def test_physics_version_covers_the_model_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A copy of the package tree with one byte changed in a model source hashes differently.
    import shutil

    root = Path(evaluate.__file__).resolve().parents[1]
    fake = tmp_path / "opscale"
    for pkg in ("model", "policy", "placement", "sim"):
        shutil.copytree(root / pkg, fake / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.csv"))
    monkeypatch.setattr(evaluate, "__file__", str(fake / "sim" / "evaluate.py"))
    evaluate.physics_version.cache_clear()
    try:
        before = evaluate.physics_version()
        evaluate.physics_version.cache_clear()
        gpus = fake / "model" / "gpus.py"
        gpus.write_text(gpus.read_text() + "\n# changed\n")
        assert evaluate.physics_version() != before
    finally:
        evaluate.physics_version.cache_clear()
