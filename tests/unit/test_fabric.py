"""Where attention↔FFN pairs sit: the planners' same-node share against what placement does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from opscale.model.fabric import same_node_share
from opscale.policy.operator import plan_operator
from opscale.policy.planner_core import Option, hop_model, node_share, pass_ms
from opscale.policy.types import PoolKey
from opscale.sim.fixed import Steady, static_spec, steady_trace
from opscale.sim.observe import window_of
from opscale.sim.run import simulate, units_for
from opscale.sim.traces import Trace


@pytest.mark.parametrize(
    ("stage_gpus", "pair", "share"),
    [
        (6.0, ((2.0, 1), (4.0, 1)), 1.0),  # one node holds the stage
        (12.0, None, 0.5),  # two nodes, pairs of unknown size: about one in two
        (12.0, ((4.0, 1), (8.0, 1)), 0.0),  # 4 + 8 GPUs never share an 8-GPU node
        (16.0, ((8.0, 1), (8.0, 1)), 0.0),
        (16.0, ((4.0, 1), (4.0, 3)), 1 / 3),  # the attention replica's node has room for one FFN of three
        (24.0, ((1.0, 12), (1.0, 12)), 1 / 3),  # small replicas: the stage's spread decides
        (9.0, ((0.5, 2), (4.0, 2)), 0.5),
    ],
)
def test_same_node_share_is_bounded_by_the_room_beside_a_replica(
    stage_gpus: float, pair: tuple[tuple[float, int], tuple[float, int]] | None, share: float
) -> None:
    assert same_node_share(stage_gpus, pair) == pytest.approx(share)


def test_a_lone_long_prompt_costs_in_the_planner_what_the_placed_simulator_charges() -> None:
    """A prefill path of a 4-GPU attention replica and an 8-GPU FFN replica: placement can never put the
    two on one node, so every hand-off crosses the network. The planner's hop model must say so (the
    stage-size rule alone said one pair in two shares a node: 12.25 GPUs over two nodes)."""
    load = Steady("qwen2-7b", 1.0, "fixed", seconds=30.0, warmup_s=0.0)
    perf = load.perf()
    plan = plan_operator(perf, window_of(steady_trace(load, 0), 0.0, 30.0), load.slo)
    pools = dict(plan.pools)
    att, ffn = PoolKey("prefill", "attention"), PoolKey("prefill", "ffn")
    pools[att] = replace(pools[att], replicas=1, gpus_per_replica=4, gpu_share=1.0)
    pools[ffn] = replace(pools[ffn], replicas=1, gpus_per_replica=8, gpu_share=1.0)
    n = 60_000
    trace = Trace("one", np.array([1.0]), np.array([n]), np.array([2]))
    res = simulate(static_spec(load, pools), trace, pools)
    units = [u for u in units_for(perf, tuple(pools)) if u.stage == "prefill"]
    chosen = {u.pool: Option(1, pools[u.pool].gpus, 1, 0, 0, 0, pools[u.pool].gpus, 0) for u in units}
    share = node_share(units, chosen)
    assert share == 0.0
    service = sum(pass_ms(perf, u, 1, n, chosen[u.pool].gpus) for u in units)
    priced = service + hop_model(perf, units, share)(n)
    assert res.requests.ttft_s[0] * 1e3 == pytest.approx(priced, rel=0.02)
    assert res.requests.ttft_s[0] * 1e3 > 1.2 * (service + hop_model(perf, units, 0.5)(n))


def test_the_plan_says_which_share_of_its_pairs_it_priced_on_one_node() -> None:
    """Long prompts on qwen2-7b: the prefill pools the planner picks are too big to share a node, and
    its reasons say so with the share it priced."""
    load = Steady("qwen2-7b", 8.0, "longtail", seconds=120.0)
    plan = plan_operator(load.perf(), window_of(steady_trace(load, 0), 0.0, 120.0), load.slo)
    shares = {sp.stage: node_share([plan.units[p] for p in sp.chosen], sp.chosen) for sp in plan.stages}
    split = {stage: share for stage, share in shares.items() if share < 1.0}
    assert split, "no stage split over nodes: the case this test is about did not arise"
    for stage, share in split.items():
        assert f"{stage}: {100 * share:.0f}% of the attention↔FFN replica pairs can share a node" in " ".join(
            plan.reasons
        )
