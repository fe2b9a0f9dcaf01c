"""what-if: operator vs model plans side by side for llama3-70b on H100 at a steady load."""

from __future__ import annotations

import pytest

from opscale.policy.types import InfeasibilityKind, PoolKey
from opscale.policy.whatif import format_side_by_side, steady_load, what_if
from opscale.spec import PolicyKind
from tests.builders import spec


@pytest.mark.parametrize("rps", [2.0, 10.0, 40.0])
def test_operator_vs_model_llama3_70b(rps: float) -> None:
    op, model = what_if(spec(), rps, 1000, 250)
    assert (op.policy, model.policy) == ("operator", "model")
    for r in (op, model):
        assert not r.infeasible and r.reasons
        assert r.prediction is not None and r.prediction.gpus == r.gpus
        assert r.prediction.ttft_ms is not None and r.prediction.ttft_ms <= 2000.0
        assert r.prediction.tbt_ms is not None and r.prediction.tbt_ms <= 100.0
        assert r.prediction.watts is not None and r.prediction.watts > 0
    # The operator policy plans both forms per stage and runs the cheaper one (opscale.policy.hybrid):
    # never more GPUs than the whole-model plan, and its reasons say which form each stage runs.
    assert op.gpus <= model.gpus
    assert sum(r.startswith(("prefill: runs", "decode: runs")) for r in op.reasons) == 2


def test_steady_load_is_fresh_and_consistent() -> None:
    load = steady_load(10.0, 1000, 250)
    assert load.decode_tps == 2500.0 and load.prefill_uncached_tps == 10_000.0
    assert all(age == 0.0 for age in load.staleness_s.values())


def test_first_plan_is_not_held_back_by_step_limits_or_windows() -> None:
    s = spec(limits=[{"max_replicas": 64, "max_step": 1}], stabilization={"scale_up_window_s": 600})
    (op,) = what_if(s, 60.0, 1000, 250, [PolicyKind.OPERATOR])
    decode = [p for k, p in op.pools.items() if k.stage == "decode" and p.replicas]
    assert any(p.replicas > 1 for p in decode)


def test_pd_without_params_is_reported_not_raised() -> None:
    (pd,) = what_if(spec(), 10.0, 1000, 250, [PolicyKind("pd")])
    assert [i.kind for i in pd.infeasible] == [InfeasibilityKind.MISSING_INPUT]
    assert pd.pools == {} and "pd_params" in pd.reasons[0]


def test_pd_and_static_run_side_by_side() -> None:
    s = spec(policy="pd", pd_params={"target_decode_tokens_per_s_per_instance": 1000})
    pd, op, model = what_if(s, 10.0, 1000, 250)
    # 10 req/s × 250 tokens = 2500 decode tokens/s over 1000 per instance: ceil(2.5) = 3 decode,
    # ceil(3 × 0.5) = 2 prefill.
    assert pd.policy == "pd" and pd.pools[PoolKey("decode", "model")].replicas == 3
    assert pd.pools[PoolKey("prefill", "model")].replicas == 2
    assert (op.policy, model.policy) == ("operator", "model")


def test_format_side_by_side_shows_every_pool_and_reason() -> None:
    results = what_if(spec(), 10.0, 1000, 250)
    text = format_side_by_side(results)
    first = text.splitlines()[0]
    assert "operator" in first and "model" in first
    for needle in (
        "GPUs",
        "TTFT p99 ms (SLO 2000)",
        "TBT p99 ms (SLO 100)",
        "watts",
        "decode/attention",
        "prefill/model",
        "wait p99",
    ):
        assert needle in text
    gpu_row = next(line for line in text.splitlines() if line.startswith("GPUs"))
    assert gpu_row.split()[1:] == [str(results[0].gpus), str(results[1].gpus)]


def test_colocated_what_if() -> None:
    op, model = what_if(spec(mode="colocated"), 10.0, 1000, 250)
    assert {k.stage for k in op.pools} == {"serving"} and set(model.pools) == {PoolKey("serving", "model")}
    for r in (op, model):
        assert not r.infeasible
        assert r.prediction is not None and r.prediction.tbt_ms is not None and r.prediction.tbt_ms <= 100.0
