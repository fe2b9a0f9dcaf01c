"""model policy: whole-model replicas per stage, TP that fits, SLO met, brute-force optimality and
monotonicity in load — the same checks the operator policy passes, so the comparison is fair."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.model import PerfModel, get_preset, perf_model
from opscale.policy.model_level import ModelPolicy, plan_model, whole_model_unit
from opscale.policy.planner_core import batch_candidates, evaluate, gpu_choices, min_gpus, pass_ms
from opscale.policy.planner_stage import stage_work
from opscale.policy.types import SLO, InfeasibilityKind, LoadWindow, PolicyInput, PoolKey, Signal


def perf(name: str = "llama3-8b") -> PerfModel:
    return perf_model(get_preset(name), "H100")


def load(rps: float, n_in: float = 1000.0, n_out: float = 250.0) -> LoadWindow:
    return LoadWindow(
        window_s=10.0,
        arrival_rate_rps=rps,
        input_tokens_mean=n_in,
        output_tokens_mean=n_out,
        staleness_s={s: 0.0 for s in Signal},
    )


def test_whole_model_unit_sums_the_operators() -> None:
    p = perf("llama3-70b")
    unit = whole_model_unit(p, "decode")
    assert unit.pool == PoolKey("decode", "model")
    assert unit.ops == ("embedding", "attention", "ffn", "lm_head")
    expected = sum(p.pass_latency_ms("decode", op, 64, 1125, 4) for op in unit.ops)
    assert pass_ms(p, unit, 64, 1125, 4) == pytest.approx(expected)
    # Weights 2 × 2.10 (vocab matrices) + 24.16 + 112.74 = 141.1 GB, over one GPU's 77.0 GB usable:
    # TP 2 at least; at batch 256 × 1250 tokens the KV adds 104.9 GB -> 246 GB -> 4 GPUs.
    assert min_gpus(p, unit, 1, 1250) == 2
    assert min_gpus(p, unit, 256, 1250) == 4


@pytest.mark.parametrize("name", ["llama3-8b", "llama3-70b", "mixtral-8x7b"])
@pytest.mark.parametrize("rps", [1.0, 10.0, 40.0])
def test_plan_meets_slo(name: str, rps: float) -> None:
    p, slo = perf(name), SLO(2000.0, 100.0)
    plan = plan_model(p, load(rps), slo)
    assert not plan.infeasible
    assert set(plan.pools) == {PoolKey("prefill", "model"), PoolKey("decode", "model")}
    assert plan.prediction.ttft_ms is not None and plan.prediction.ttft_ms <= slo.ttft_ms
    assert plan.prediction.tbt_ms is not None and plan.prediction.tbt_ms <= slo.tbt_ms
    for pool, pp in plan.pools.items():
        work = stage_work(load(rps), pool.stage)
        unit = whole_model_unit(p, pool.stage)
        assert pp.batch_size is not None
        assert pp.gpus_per_replica in gpu_choices(min_gpus(p, unit, pp.batch_size, work.context))
        assert evaluate(
            p, unit, work, pp.batch_size, pp.gpus_per_replica, pp.replicas, 0.99
        ) == pytest.approx(pp.predicted_latency_ms)
    assert any("decode/model:" in r for r in plan.reasons)


@pytest.mark.parametrize(
    ("name", "rps", "slo"),
    [
        ("llama3-8b", 5.0, SLO(200.0, 25.0)),
        ("llama3-70b", 10.0, SLO(2000.0, 100.0)),
        ("mixtral-8x7b", 20.0, SLO(500.0, 60.0)),
    ],
)
def test_no_plan_with_fewer_gpus_meets_the_slo(name: str, rps: float, slo: SLO) -> None:
    p = perf(name)
    plan = plan_model(p, load(rps), slo)
    for sp in plan.stages:
        work, unit = stage_work(load(rps), sp.stage), whole_model_unit(p, sp.stage)
        cheapest = math.inf
        for b in batch_candidates(256):
            for g in gpu_choices(min_gpus(p, unit, b, work.context)):
                for r in range(1, 40):
                    if r * g < cheapest and evaluate(p, unit, work, b, g, r, 0.99) <= sp.budget_ms:
                        cheapest = r * g
        assert sp.gpus == cheapest, sp.stage


@settings(max_examples=25, deadline=None)
@given(
    lo=st.floats(0.0, 30.0), extra=st.floats(0.0, 30.0), n_in=st.integers(50, 3000), n_out=st.integers(1, 800)
)
def test_more_load_never_fewer_gpus(lo: float, extra: float, n_in: int, n_out: int) -> None:
    p, slo = perf("llama3-70b"), SLO(3000.0, 100.0)
    small = plan_model(p, load(lo, n_in, n_out), slo)
    big = plan_model(p, load(lo + extra, n_in, n_out), slo)
    assert not small.infeasible and not big.infeasible
    assert small.prediction.gpus is not None and big.prediction.gpus is not None
    assert small.prediction.gpus <= big.prediction.gpus
    for pool, pp in small.pools.items():
        other = big.pools[pool]
        assert pp.replicas * pp.gpus_per_replica <= other.replicas * other.gpus_per_replica


def test_unreachable_slo_is_reported() -> None:
    plan = plan_model(perf("llama3-70b"), load(10.0), SLO(20.0, 100.0))
    assert [i.kind for i in plan.infeasible] == [InfeasibilityKind.SLO_UNREACHABLE]
    assert "prefill" in plan.infeasible[0].message


def test_policy_from_params() -> None:
    pol = ModelPolicy.from_params({"model": "mixtral-8x7b"})
    assert isinstance(pol, ModelPolicy) and pol.interval_s == 20.0
    out = pol.decide(
        PolicyInput(now_s=0.0, deployment="d", load=load(5.0), current={}, slo=SLO(2000.0, 100.0))
    )
    assert out.desired == plan_model(perf("mixtral-8x7b"), load(5.0), SLO(2000.0, 100.0)).pools
    assert out.predicted is not None and out.state.policy == "model"
