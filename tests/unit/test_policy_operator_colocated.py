"""Colocated mode: serving pools run prefill and decode passes in one M/M/R queue — SLO met, fewest
GPUs by brute force, monotone in load, for the operator and the model policy."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.model import PerfModel, get_preset, perf_model
from opscale.policy.model_level import ModelPolicy
from opscale.policy.operator import OperatorPolicy
from opscale.policy.planner_colocated import MAX_PREFILL_BATCH, co_frontier, least_gpus, stage_work, wait_ms
from opscale.policy.planner_core import Unit, batch_candidates, gpu_choices, pass_ms
from opscale.policy.types import SLO, InfeasibilityKind, Limits, LoadWindow, PolicyInput, PoolKey, Signal


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


def op_policy(name: str = "llama3-8b", **kw: object) -> OperatorPolicy:
    return OperatorPolicy.from_params({"model": name, "mode": "colocated", **kw})


def test_mixed_queue_numbers() -> None:
    # serving/attention of llama3-8b at 2 req/s, prefill batch 1, decode batch 8, 1 GPU, 2 replicas:
    # prefill passes 2/s of s_p, decode passes 2 × 250 / 8 = 62.5/s of s_d; one queue with Λ = 64.5/s and
    # mean service (2 s_p + 62.5 s_d) / 64.5, so every pass waits W_99(2, Λ, 1/mean) and the pool adds
    # W + s_p to TTFT and W + s_d to TBT.
    p = perf()
    key = PoolKey("serving", "attention")
    pre, dec = Unit(key, "prefill", ("attention",)), Unit(key, "decode", ("attention",))
    wp, wd = stage_work(load(2.0), "prefill"), stage_work(load(2.0), "decode")
    sp, sd = pass_ms(p, pre, 1, 1000, 1), pass_ms(p, dec, 8, 1125, 1)
    mean_s = (2 * sp + 62.5 * sd) / 64.5 / 1e3
    w = wait_ms(2, 64.5, mean_s, 0.99)
    pts = co_frontier(p, pre, dec, wp, wd, SLO(2000.0, 100.0), 8, budgets=False)
    match = [o for o in pts if (o.prefill_batch, o.decode_batch, o.gpus, o.replicas) == (1, 8, 1, 2)]
    assert match, "this point is on the frontier (no cheaper point is as fast in both stages)"
    assert match[0].ttft_ms == pytest.approx(w + sp) and match[0].tbt_ms == pytest.approx(w + sd)
    assert MAX_PREFILL_BATCH == 16


@pytest.mark.parametrize("name", ["llama3-8b", "llama3-70b", "mixtral-8x7b"])
@pytest.mark.parametrize("rps", [2.0, 10.0, 40.0])
def test_colocated_plans_meet_the_slo(name: str, rps: float) -> None:
    slo = SLO(2000.0, 100.0)
    for pol in (op_policy(name), ModelPolicy.from_params({"model": name, "mode": "colocated"})):
        out = pol.decide(PolicyInput(now_s=0.0, deployment="d", load=load(rps), current={}, slo=slo))
        assert not out.infeasible and out.predicted is not None
        assert out.predicted.ttft_ms is not None and out.predicted.ttft_ms <= slo.ttft_ms
        assert out.predicted.tbt_ms is not None and out.predicted.tbt_ms <= slo.tbt_ms
        assert all(k.stage == "serving" for k in out.desired)
        assert out.predicted.gpus == sum(p.replicas * p.gpus_per_replica for p in out.desired.values())
        assert any("wait p99" in r for r in out.reasons)


def _brute(p: PerfModel, rps: float, slo: SLO, max_batch: int, r_max: int) -> int:
    """Fewest GPUs over every (prefill batch, decode batch, GPUs, replicas ≤ r_max) per pool, by
    enumeration of each pool's non-dominated points (filtered naively) and all their combinations."""
    wp, wd = stage_work(load(rps), "prefill"), stage_work(load(rps), "decode")
    tables = []
    for spec in p.operators("decode"):
        op = spec.kind.value
        key = PoolKey("serving", op)
        pre, dec = Unit(key, "prefill", (op,)), Unit(key, "decode", (op,))
        pts = []
        for bp in batch_candidates(min(max_batch, 16)):
            for bd in batch_candidates(max_batch):
                for g in gpu_choices(least_gpus(p, dec, bd, bd * wd.context + bp * wp.context)):
                    sp, sd = pass_ms(p, pre, bp, wp.length, g), pass_ms(p, dec, bd, wd.length, g)
                    jp, jd = wp.seq_steps_per_s / bp, wd.seq_steps_per_s / bd
                    for r in range(1, r_max + 1):
                        w = wait_ms(r, jp + jd, (jp * sp + jd * sd) / (jp + jd) / 1e3, slo.quantile)
                        pts.append((r * g, w + sp, w + sd))
        tables.append(
            [
                a
                for a in pts
                if not any(b != a and b[0] <= a[0] and b[1] <= a[1] and b[2] <= a[2] for b in pts)
            ]
        )
    best = math.inf
    for combo in itertools.product(*tables):
        cost = sum(c for c, _, _ in combo)
        if (
            cost < best
            and sum(x for _, x, _ in combo) <= slo.ttft_ms
            and sum(y for _, _, y in combo) <= slo.tbt_ms
        ):
            best = cost
    return int(best)


@pytest.mark.parametrize(("rps", "slo"), [(3.0, SLO(300.0, 40.0)), (8.0, SLO(400.0, 60.0))])
def test_colocated_fewest_gpus_by_brute_force(rps: float, slo: SLO) -> None:
    p = perf()
    plan = op_policy(max_batch_size=4).plan_colocated(load(rps), slo, Limits())
    assert not plan.infeasible
    assert plan.prediction.gpus == _brute(p, rps, slo, 4, 4)


@settings(max_examples=15, deadline=None)
@given(
    lo=st.floats(0.0, 30.0), extra=st.floats(0.0, 30.0), n_in=st.integers(50, 3000), n_out=st.integers(1, 800)
)
def test_colocated_more_load_never_fewer_gpus(lo: float, extra: float, n_in: int, n_out: int) -> None:
    pol, slo = op_policy("mixtral-8x7b"), SLO(2000.0, 100.0)
    small = pol.plan_colocated(load(lo, n_in, n_out), slo, Limits())
    big = pol.plan_colocated(load(lo + extra, n_in, n_out), slo, Limits())
    assert not small.infeasible and not big.infeasible
    assert small.prediction.gpus is not None and big.prediction.gpus is not None
    assert small.prediction.gpus <= big.prediction.gpus


def test_colocated_unreachable_slo_is_reported() -> None:
    plan = op_policy("llama3-70b").plan_colocated(load(10.0), SLO(2000.0, 5.0), Limits())
    assert [i.kind for i in plan.infeasible] == [InfeasibilityKind.SLO_UNREACHABLE]
    assert "TBT 5 ms" in plan.infeasible[0].message
