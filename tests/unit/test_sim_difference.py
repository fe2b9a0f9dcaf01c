"""Where operator-level's difference from model-level comes from (opscale.sim.difference), and evaluate's
report carrying it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from opscale.sim.difference import breakdown, sentence, sizes
from opscale.sim.evaluate import markdown
from opscale.sim.experiment import RunMetrics
from opscale.sim.run import SimResult


def _result() -> SimResult:
    # 4 s: prefill moves from one whole-model replica to two attention replicas; decode stays whole
    return cast(
        SimResult,
        SimpleNamespace(
            gpus=np.array([2, 2, 4, 4]),
            replicas={
                "prefill/model": np.array([1, 1, 0, 0]),
                "prefill/attention": np.array([0, 0, 2, 2]),
                "decode/model": np.array([1, 1, 1, 1]),
            },
            watts=np.array([400.0, 400.0, 1200.0, 1200.0]),
            idle_watts_per_gpu=100.0,
            gpu_type="H100",
        ),
    )


def test_breakdown_reads_gpus_per_replica_draw_per_gpu_and_the_forms_time() -> None:
    b = breakdown(_result())
    assert b["gpus_per_replica"] == pytest.approx(12 / 10)
    assert b["watts_per_gpu"] == pytest.approx(3200 / 12)
    assert b["idle_watts_per_gpu"] == 100.0 and b["gpu_type"] == "H100"
    assert b["operator_share"] == {"prefill": 0.5, "decode": 0.0}


def _metrics(policy: str, **kw: Any) -> dict[str, Any]:
    m = {f.name: 0.0 for f in dataclasses.fields(RunMetrics)}
    m.update(
        scenario="azure-conv qwen2-57b-a14b", trace="azure-conv", model="qwen2-57b-a14b", policy=policy,
        headroom=0.0, forecast=True if policy == "operator" else None, estimated=False, requests=100,
        gpu_hours=1.0, mean_gpus=6.0, peak_gpus=8, energy_kwh_released=0.5, energy_kwh_idle=0.6,
        slo_attainment=0.995, lower_bound_gpu_hours=float("nan"), ratio_to_lower_bound=float("nan"),
    )  # fmt: skip
    m.update(kw)
    return m


WHOLE = {"operator_share": {"prefill": 0.0, "decode": 0.0}, "watts_per_gpu": 361.0,
         "idle_watts_per_gpu": 128.0, "gpus_per_replica": 2.0, "gpu_type": "H100"}  # fmt: skip


def test_a_run_on_whole_replicas_throughout_says_granularity_did_not_enter_with_the_sizes() -> None:
    assert sizes("qwen2-57b-a14b", "H100") == (2, "experts", 2)
    text = sentence(_metrics("operator"), WHOLE, _metrics("model", mean_gpus=5.6), WHOLE)
    assert "6.0 vs 5.6 GPUs allocated on average" in text
    assert "held operator pools 0% of the time in prefill, 0% of the time in decode" in text
    assert "fits on 2 GPU(s) and its largest operator, experts, alone needs 2" in text
    assert "not granularity" in text


def test_a_run_that_used_operator_pools_names_their_share_and_no_whole_model_caveat() -> None:
    split = {**WHOLE, "operator_share": {"prefill": 0.25, "decode": 1.0}}
    text = sentence(_metrics("operator"), split, _metrics("model"), WHOLE)
    assert "25% of the time in prefill, 100% of the time in decode" in text
    assert "throughout" not in text


def test_evaluate_report_adds_the_breakdown_and_reads_results_written_without_one() -> None:
    sc = {"gpu_type": "H100"}
    rows = [
        {"scenario": sc, "metrics": _metrics("operator"), "breakdown": WHOLE},
        {"scenario": sc, "metrics": _metrics("model"), "breakdown": WHOLE},
    ]
    assert "Where it comes from: " in markdown(rows, "cmd")
    old = [{k: v for k, v in r.items() if k != "breakdown"} for r in rows]
    text = markdown(old, "cmd")
    assert "operator vs model:" in text and "Where it comes from" not in text
