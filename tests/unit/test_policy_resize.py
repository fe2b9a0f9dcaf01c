"""A plan that changes a pool's replica size is weighed in GPUs by the stabilizer (``pipeline.finish``),
or as a scale-up where the running replicas cannot hold the KV the plan sizes for
(``planner_policy.kv_short``)."""

from __future__ import annotations

from opscale.model import get_preset, perf_model
from opscale.policy.model_level import plan_model
from opscale.policy.pipeline import finish
from opscale.policy.planner_policy import kv_short
from opscale.policy.stabilizer import StabilizerConfig
from opscale.policy.types import (
    SLO,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolPlan,
)
from tests.unit.test_policy_adaptive import window

POOL = PoolKey("decode", "model")
CONFIG = StabilizerConfig(scale_down_window_s=30.0)
LOAD = window(5.0)  # fresh signals: the stabilizer decides (the load itself is not read)


def tick(
    now: float, current: PoolPlan, raw: PoolPlan, state: PolicyState | None = None, upsized: bool = False
) -> PolicyOutput:
    inp = PolicyInput(now, "d", LOAD, {POOL: current}, SLO(2000.0, 100.0), state=state or PolicyState())
    up = frozenset({POOL}) if upsized else frozenset()
    return finish(
        inp, policy="p", raw_plans={POOL: raw}, reasons=[], defaults=CONFIG, required=(), upsized=up
    )


def run(ticks: list[tuple[float, PoolPlan]], start: PoolPlan) -> list[PoolPlan]:
    """Each tick's raw plan through ``finish``, the output in force at the next tick."""
    cur, state, out = start, PolicyState(), []
    for now, raw in ticks:
        res = tick(now, cur, raw, state)
        cur, state = res.desired[POOL], res.state
        out.append(cur)
    return out


def test_fewer_but_bigger_replicas_with_more_gpus_is_a_scale_up() -> None:
    """3 × 1 GPU → 2 × 2 GPUs: fewer replicas, one GPU more. Compared as counts it was held back by
    the scale-down window; it goes through at once."""
    out = tick(100.0, PoolPlan(3, gpus_per_replica=1), PoolPlan(2, gpus_per_replica=2))
    assert out.desired[POOL] == PoolPlan(2, gpus_per_replica=2)
    assert "weighed in GPUs, the running 3 count as 2." in " ".join(out.reasons)


def test_the_same_count_on_half_the_gpus_waits_out_the_scale_down_window() -> None:
    """1 × 8 GPUs → 1 × 4 GPUs: the same count on half the GPUs went through at once as counts; it is a
    scale-in, held until the window has seen no larger recommendation, then taken."""
    big, small = PoolPlan(1, gpus_per_replica=8), PoolPlan(1, gpus_per_replica=4)
    out = run([(0.0, big), (10.0, small), (20.0, small), (30.0, small)], big)
    assert [p.gpus_per_replica for p in out] == [8, 8, 8, 4]  # the t = 0 recommendation leaves at 30 s
    # held, the history is kept in replicas of the size that runs: back to 8 GPUs, no extra replica
    assert all(p.replicas == 1 for p in out)


def test_more_smaller_replicas_on_fewer_gpus_is_a_scale_in() -> None:
    """2 × 2 GPUs → 3 × 1 GPU: more replicas, one GPU fewer — a scale-in, not the scale-up its count
    suggests."""
    two, one = PoolPlan(2, gpus_per_replica=2), PoolPlan(3, gpus_per_replica=1)
    out = run([(0.0, two), (10.0, one), (41.0, one)], two)
    assert out == [two, two, one]


def test_a_roll_to_as_many_gpus_waits_like_a_scale_in() -> None:
    """1 × 4 → 2 × 2 GPUs: more replicas, the same GPUs — a roll that saves nothing, held by the window
    (as counts it was a scale-up, taken at once)."""
    res = tick(100.0, PoolPlan(1, gpus_per_replica=4), PoolPlan(2, gpus_per_replica=2))
    assert res.desired[POOL] == PoolPlan(1, gpus_per_replica=4)  # first sight: the window holds


def test_a_bigger_size_then_a_burst_is_not_cut_by_old_units() -> None:
    """After 1 × 4 → 1 × 8, the history is in 8-GPU replicas: a drop back to 1 × 4 ten seconds later
    is held (as counts, 1 → 1, it went through at once)."""
    big, small = PoolPlan(1, gpus_per_replica=8), PoolPlan(1, gpus_per_replica=4)
    out = run([(0.0, small), (10.0, big), (20.0, small), (45.0, small)], small)
    assert [p.gpus_per_replica for p in out] == [4, 8, 8, 4]


def test_the_size_a_held_history_counts_in_survives_the_state_store() -> None:
    res = tick(100.0, PoolPlan(1, gpus_per_replica=8), PoolPlan(1, gpus_per_replica=4))
    st = res.state.stabilizer
    assert st.sizes == {POOL: 4.0}
    assert type(st).from_json(st.to_json()) == st


def test_a_change_of_size_the_kv_needs_is_a_scale_up_whatever_the_gpus() -> None:
    """2 × 2 → 1 × 4 GPUs waits like a scale-in (above) unless the running replicas cannot hold the KV
    the plan sizes for: then it goes through at once, as does 3 × 2 → 1 × 4, on fewer GPUs."""
    for start in (PoolPlan(2, gpus_per_replica=2), PoolPlan(3, gpus_per_replica=2)):
        out = tick(100.0, start, PoolPlan(1, gpus_per_replica=4), upsized=True)
        assert out.desired[POOL] == PoolPlan(1, gpus_per_replica=4)
        assert not any("weighed in GPUs" in r for r in out.reasons)


def test_kv_short_names_the_pool_whose_replicas_in_force_cannot_hold_the_planned_kv() -> None:
    """llama3-70b at 10 req/s: the model-level plan's decode is 1 × 4 GPUs for ~98k tokens resident. Two
    2-GPU replicas hold 78k: short; one 8-GPU replica holds more than the plan: not (a scale-in, weighed
    in GPUs as before); neither is a pool whose size does not change."""
    perf = perf_model(get_preset("llama3-70b"), "H100")
    plan = plan_model(perf, window(10.0), SLO(2000.0, 100.0))
    new = plan.pools[POOL]
    assert (new.replicas, new.gpus_per_replica) == (1, 4)

    def short(cur: PoolPlan) -> dict[PoolKey, str]:
        return kv_short(perf, plan, {**plan.pools, POOL: cur})

    said = short(PoolPlan(2, gpus_per_replica=2, batch_size=64))
    assert list(said) == [POOL]
    assert "the 2 × 2 GPU in force hold 78,095 tokens of KV, the planned 1 × 4 GPU" in said[POOL]
    assert short(PoolPlan(1, gpus_per_replica=8, batch_size=64)) == {}
    assert short(new) == {}  # the planned size itself
    assert short(PoolPlan(0, gpus_per_replica=2)) == {}  # nothing runs: nothing to weigh


def test_a_count_the_stabilizer_cut_short_keeps_the_plans_share_and_micro_batches() -> None:
    """A count that is neither the plan's nor the one in force (here the scale-down window's 4, planned
    25 s before, between 6 running and 2 planned) keeps the plan's whole replica shape. It lost its GPU
    share (a whole GPU per replica) and its micro-batches (the stage's pools then ran mixed shapes)."""

    def plan(n: int) -> PoolPlan:
        return PoolPlan(n, batch_size=64, gpu_share=0.25, micro_batches=2)

    out = run([(0.0, plan(6)), (10.0, plan(4)), (35.0, plan(2))], plan(6))
    assert [p.replicas for p in out] == [6, 6, 4]
    assert out[2] == plan(4)


def test_a_count_held_at_the_one_in_force_runs_the_plans_micro_batches() -> None:
    """A pool the stabilizer holds at its count in force keeps its replicas' shape but takes the plan's
    micro-batches: its stage's other pools take the plan's, and the stage runs one pipeline."""
    start = PoolPlan(3, batch_size=128, gpus_per_replica=1)
    out = run([(0.0, start), (10.0, PoolPlan(1, batch_size=128, gpus_per_replica=1, micro_batches=2))], start)
    assert out[1] == PoolPlan(3, batch_size=128, gpus_per_replica=1, micro_batches=2)
