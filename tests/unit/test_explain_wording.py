"""``opscale explain`` reads right in each stabilizer case: the prediction is labelled as the policy's
plan when the stabilizer held other counts (never as GPUs in use), and findings that name no pool show
as the deployment's, never as ``unspecified/unspecified``. (The stabilizer's own sentences for a held
scale-up, a refused scale-in and a level hold are in test_policy_stabilizer.py.)"""

from __future__ import annotations

import io

from rich.console import Console

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.explain import render

ATTN = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_ATTENTION)


def text_of(decision: dpb.Decision) -> str:
    out = io.StringIO()
    Console(file=out, width=200, no_color=True).print(render(dpb.ExplainDecisionResponse(decision=decision)))
    return out.getvalue()


def decision(replicas: int, predicted_gpus: float, *effects: dpb.StabilizerEffect) -> dpb.Decision:
    return dpb.Decision(
        id="7",
        deployment="chat",
        pools=[cpb.PoolPlan(pool=ATTN, replicas=replicas, gpus_per_replica=2)],
        previous_pools=[cpb.PoolPlan(pool=ATTN, replicas=0, gpus_per_replica=2)],
        prediction=cpb.Prediction(ttft_ms=800, tbt_ms=40, gpus=predicted_gpus, watts=1279, percentile=99),
        stabilizer_effects=list(effects),
        placement_outcome=dpb.PLACEMENT_OUTCOME_APPLIED,
    )


def test_a_held_plan_is_predicted_for_the_policy_not_shown_as_in_use() -> None:
    # fail-static held decode/attention at 0 while the policy's plan (5 replicas × 2 GPUs) wanted 10
    held = dpb.StabilizerEffect(
        pool=ATTN,
        raw_replicas=5,
        stabilized_replicas=0,
        rule="fail_static",
        reason="decode/attention: fail-static because x: holding decode/attention 0 instead of scaling up "
        "to 5 as the policy recommended (no scale-out on stale data).",
    )
    out = text_of(decision(0, 10, held))
    assert "GPUs:        0 decided" in out
    assert "for the policy's plan (10 GPUs, 1,279 W), not for the 0 GPUs decided" in out
    assert "instead of scaling up to 5" in out and "scaling in" not in out


def test_an_applied_plan_is_predicted_as_is() -> None:
    out = text_of(decision(5, 10))
    assert "GPUs:        10 decided" in out
    assert "TTFT 800.0 ms, TBT 40.0 ms at p99; 10 GPUs, 1,279 W" in out
    assert "not for the" not in out
    assert "Stabilizer: no changes to the policy's recommendation" in out


def test_shares_of_a_gpu_count_as_shares() -> None:
    d = decision(0, 1.5)
    d.pools[0].CopyFrom(cpb.PoolPlan(pool=ATTN, replicas=3, gpus_per_replica=1, gpu_share=0.5))
    out = text_of(d)
    assert "1.5 decided" in out and "1.5 GPUs, 1,279 W" in out and "not for the" not in out


def test_a_finding_without_a_pool_is_the_deployments() -> None:
    d = decision(0, 0)
    d.infeasible.append(cpb.Infeasibility(reason="Fail-static: decode_tps was never reported."))
    d.infeasible.append(cpb.Infeasibility(pool=ATTN, requested=9, satisfiable=4, reason="max_replicas 4"))
    out = text_of(d)
    assert "unspecified" not in out
    rows = [line.split() for line in out.split("Infeasible")[1].splitlines()]
    assert rows[2][:4] == ["(deployment)", "-", "-", "Fail-static:"]
    assert rows[3] == ["decode/attention", "9", "4", "max_replicas", "4"]
