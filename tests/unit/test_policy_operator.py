"""operator policy: per-operator pools that meet the SLO by their own prediction and fit the memory model,
the exact search against the paper's greedy, monotonicity, infeasibility as data, the floor, limits, and
any input answered with a plan or a reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.model import PerfModel, get_preset, perf_model
from opscale.policy.model_level import plan_model
from opscale.policy.operator import OperatorPolicy, operator_units, plan_hybrid, plan_operator
from opscale.policy.planner_core import batch_candidates, gpu_choices, memory
from opscale.policy.types import (
    SLO,
    InfeasibilityKind,
    Limits,
    LoadWindow,
    PolicyInput,
    PoolKey,
    PoolLimits,
    Signal,
    plan_gpus,
)


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


def test_batch_and_gpu_candidates() -> None:
    assert batch_candidates(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert batch_candidates(48) == (1, 2, 4, 8, 16, 32, 48)
    assert gpu_choices(1) == (1, 2, 4, 8)
    assert gpu_choices(3) == (4, 8)  # TP stays a power of two
    assert gpu_choices(16, most=16) == (16,)  # memory forces past one node: only the smallest that fits
    assert gpu_choices(None) == ()  # nothing fits


@pytest.mark.parametrize("name", ["llama3-8b", "llama3-70b", "mixtral-8x7b"])
@pytest.mark.parametrize("rps", [1.0, 10.0, 40.0])
def test_plan_meets_slo_fits_and_reports_per_pool(name: str, rps: float) -> None:
    p, slo = perf(name), SLO(2000.0, 100.0)
    plan = plan_operator(p, load(rps), slo)
    assert not plan.infeasible
    pred = plan.prediction
    assert pred.ttft_ms is not None and pred.ttft_ms <= slo.ttft_ms
    assert pred.tbt_ms is not None and pred.tbt_ms <= slo.tbt_ms
    assert set(plan.pools) == {u.pool for s in ("prefill", "decode") for u in operator_units(p, s)}
    for unit in (u for s in ("prefill", "decode") for u in operator_units(p, s)):
        pp = plan.pools[unit.pool]
        assert memory(p, unit, pp.batch_size or 1, pp.gpus).fits
    assert pred.gpus == plan_gpus(plan.pools.values())
    assert pred.watts == pytest.approx(sum(pp.watts or 0.0 for pp in plan.pools.values()))
    assert any("prefill/attention:" in r and "wait p99" in r for r in plan.reasons)
    assert any("resident sequences" in r for r in plan.reasons)


def test_more_load_never_fewer_gpus() -> None:
    p, slo = perf("mixtral-8x7b"), SLO(2000.0, 100.0)
    plans = [plan_operator(p, load(r, 1200, 300), slo) for r in (0.5, 1, 2, 4, 8, 16, 32)]
    for stage in (0, 1):
        gpus = [pl.stages[stage].gpus for pl in plans]
        assert gpus == sorted(gpus), stage


def test_unreachable_slo_is_reported_not_raised() -> None:
    # A 5 ms TBT is below llama3-70b's decode pass at any TP on H100 (~13 ms at TP 8 for all operators).
    plan = plan_operator(perf("llama3-70b"), load(10.0), SLO(2000.0, 5.0))
    assert {i.kind for i in plan.infeasible} == {InfeasibilityKind.SLO_UNREACHABLE}
    assert "decode" in plan.infeasible[0].message and "5 ms SLO" in plan.infeasible[0].message
    assert plan.prediction.tbt_ms is None or plan.prediction.tbt_ms > 5.0
    assert plan.prediction.ttft_ms is not None and plan.prediction.ttft_ms <= 2000.0


def test_unservable_requests_are_counted_not_averaged() -> None:
    # 100k-token prompts cannot be prefilled within 2 s by any replica of llama3-70b: reported as data.
    plan = plan_operator(perf("llama3-70b"), load(1.0, 100_000, 100), SLO(2000.0, 100.0))
    assert plan.prediction.unservable_fraction == pytest.approx(1.0)
    assert any(i.kind is InfeasibilityKind.UNSERVABLE_REQUESTS for i in plan.infeasible)


def test_max_replicas_below_stability_is_reported() -> None:
    limits = Limits(default_pool=PoolLimits(max_replicas=1))
    plan = plan_operator(perf(), load(2000.0), SLO(2000.0, 100.0), limits)
    above = [i for i in plan.infeasible if i.kind is InfeasibilityKind.ABOVE_MAX_REPLICAS]
    assert above and all(i.allowed == 1 and (i.needed or 0) > 1 for i in above)
    assert all(pp.replicas <= 1 for pp in plan.pools.values())


def test_floor_keeps_a_share_of_whole_model_capacity() -> None:
    p, slo = perf(), SLO(2000.0, 100.0)
    whole = plan_model(p, load(40.0), slo)
    floored = plan_operator(p, load(40.0), slo, floor_fraction=1.0)
    for pool, pp in floored.pools.items():
        assert pp.replicas >= whole.pools[PoolKey(pool.stage, "model")].replicas
    assert any("floor keeps" in r for r in floored.reasons)


def test_policy_decides_through_the_stabilizer() -> None:
    pol = OperatorPolicy.from_params({"model": "llama3-8b", "max_batch_size": 64})
    assert isinstance(pol, OperatorPolicy) and pol.interval_s == 1.0
    out = pol.decide(
        PolicyInput(now_s=0.0, deployment="d", load=load(10.0), current={}, slo=SLO(2000.0, 100.0))
    )
    raw = plan_hybrid(perf(), load(10.0), SLO(2000.0, 100.0), max_batch_size=64)
    assert out.desired == raw.pools and out.predicted == raw.prediction
    assert out.reasons[: len(raw.reasons)] == raw.reasons and not out.infeasible
    assert out.state.policy == "operator" and out.state.data["forms"] == dict(raw.forms)


@settings(max_examples=30, deadline=None)
@given(
    rps=st.floats(0.0, 500.0),
    n_in=st.floats(0.0, 20_000.0),
    n_out=st.floats(0.0, 4000.0),
    ttft=st.floats(1.0, 10_000.0),
    tbt=st.floats(1.0, 500.0),
    max_r=st.one_of(st.none(), st.integers(0, 50)),
    model=st.sampled_from(["llama3-8b", "mixtral-8x7b"]),
)
def test_any_input_gives_a_plan_or_says_why(
    rps: float, n_in: float, n_out: float, ttft: float, tbt: float, max_r: int | None, model: str
) -> None:
    # Never an exception: a plan for every pool within the bounds, and either the SLO is met as predicted
    # or an Infeasibility says which stage misses it and why.
    p, slo = perf(model), SLO(ttft, tbt)
    limits = Limits(default_pool=PoolLimits(max_replicas=max_r))
    plan = plan_operator(p, load(rps, n_in, n_out), slo, limits)
    assert set(plan.pools) == {u.pool for s in ("prefill", "decode") for u in operator_units(p, s)}
    for pp in plan.pools.values():
        assert max_r is None or pp.replicas <= max_r
    for sp in plan.stages:
        if sp.met:
            assert sp.latency_ms <= sp.budget_ms
        else:
            assert sp.infeasible and all(i.message for i in sp.infeasible)


@pytest.mark.parametrize("rps", [2.0, 8.0, 20.0])
def test_greedy_never_beats_exact(rps: float) -> None:
    p, slo = perf("llama3-70b"), SLO(1000.0, 60.0)
    exact = plan_operator(p, load(rps), slo)
    greedy = plan_operator(p, load(rps), slo, search="greedy")
    assert not exact.infeasible
    assert exact.prediction.gpus is not None and greedy.prediction.gpus is not None
    assert exact.prediction.gpus <= greedy.prediction.gpus
