"""Placement plans across steps: domain trials for new groups, moves that make room for short pools,
moves of replicas that are only about to start, and input validation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from opscale.errors import InvalidArgument
from opscale.placement import GpuSlot, NodeInfo, PlacementInput, PoolDemand, place
from tests.unit.test_placement_rules import demand, node, rep, spots


def test_a_group_tries_the_next_domain_when_the_estimate_was_wrong() -> None:
    # S1 "a": two 1-GPU nodes (estimate: 2 GPUs free, a perfect fit for one 2-GPU replica, so it is tried
    # first); S1 "b": one 4-GPU node. The trial in "a" fails (no node has 2 GPUs) and is undone; "b" holds
    # it. Nothing of the failed trial leaks: no infeasible, ids start at 0.
    nodes = (node("a1", 1, s1="a"), node("a2", 1, s1="a", s0="r2"), node("b1", 4, s1="b", s0="r3"))
    out = place(PlacementInput(nodes, (), (demand("d", "decode", "model", 1, g=2, group="g"),)))
    assert [(r.id, r.node, r.gpu_indices) for r in out.start] == [("d-decode-model-0", "b1", (0, 1))]
    assert out.infeasible == ()
    assert any("group g: new, placed in s1 domain z1/a/b" in r for r in out.reasons)


def test_a_group_that_fits_nowhere_goes_where_most_of_it_fits() -> None:
    # 3 whole-GPU replicas; S1 "a" has 1 GPU, "b" has 2: neither holds all three, "b" places the most.
    nodes = (node("a1", 1, s1="a"), node("b1", 2, s1="b", s0="r2"))
    out = place(PlacementInput(nodes, (), (demand("d", "decode", "attention", 3, group="g"),)))
    assert [r.node for r in out.start] == ["b1", "b1"]
    [short] = out.infeasible
    assert short.placed == 2 and "s1 domain z1/a/b" in short.reason


def test_other_domain_levels_scope_the_group() -> None:
    # The same two S1 domains under one S2: pinned at "s2", the group may use both (4 + 1 replicas).
    nodes = (node("a1", 4, s1="a"), node("b1", 1, s1="b", s0="r2"))
    ds = (demand("d", "decode", "attention", 5, group="g"),)
    assert len(place(PlacementInput(nodes, (), ds, domain_level="s2")).start) == 5
    assert len(place(PlacementInput(nodes, (), ds, domain_level="s1")).start) == 4


def test_a_move_that_frees_a_gpu_lets_a_short_pool_start() -> None:
    # Node of 2 GPUs, each held alone by a half-GPU replica of pool y. A whole-GPU replica of pool x does
    # not fit at first; moving y-0 onto GPU 1 frees GPU 0, and the retry starts x there.
    current = (rep("y-0", "d", "s", "y", "n", (0,), cf=0.5), rep("y-1", "d", "s", "y", "n", (1,), cf=0.5))
    ds = (demand("d", "s", "y", 2, cf=0.5), demand("d", "s", "x", 1))
    out = place(PlacementInput((node("n", 2),), current, ds))
    assert [r.id for r in out.stop] == ["y-0"]
    assert sorted((r.operator, r.gpu_indices) for r in out.start) == [("x", (0,)), ("y", (1,))]
    assert out.infeasible == ()


def test_a_replica_about_to_start_moves_without_a_stop() -> None:
    # a (any type, 30 GiB, placed first: more memory) opens GPU 0 of the H100 node; b (H200 only) must
    # open the H200 GPU. a fits beside b, which empties the H100 GPU: a simply starts there, same id.
    nodes = (node("h100", 1, "H100"), node("h200", 1, "H200", 141, s0="r2"))
    ds = (demand("d", "s", "a", 1, cf=0.5, mem_gib=30), demand("d", "s", "b", 1, cf=0.5, types=("H200",)))
    out = place(PlacementInput(nodes, (), ds))
    assert out.stop == ()
    assert sorted((r.id, r.node, r.gpu_indices) for r in out.start) == [
        ("d-s-a-0", "h200", (0,)),
        ("d-s-b-0", "h200", (0,)),
    ]


def test_peers_share_a_gpu_when_compute_and_memory_allow() -> None:
    # prefill attention and FFN exchange 16 KiB/token; both take half a GPU and 36 GiB: they share GPU 0
    # (36 + 36 <= 72 GiB, the usable share of 80; 0.5 + 0.5 <= 1.0), and the second pair GPU 1.
    ds = (
        demand("d", "prefill", "attention", 2, cf=0.5, mem_gib=36, exchange={("prefill", "ffn"): 16384.0}),
        demand("d", "prefill", "ffn", 2, cf=0.5, mem_gib=36),
    )
    out = place(PlacementInput((node("n", 4),), (), ds))
    assert sorted(spots(out)) == [("n", (0,)), ("n", (0,)), ("n", (1,)), ("n", (1,))]


@pytest.mark.parametrize(
    "build",
    [
        lambda: PoolDemand("d", "s", "o", 1, 1, 1, compute_fraction=0.0),
        lambda: PoolDemand("d", "s", "o", -1, 1, 1),
        lambda: PoolDemand("d", "s", "o", 1, 0, 1),
        lambda: PoolDemand("", "s", "o", 1, 1, 1),
        lambda: GpuSlot(0, "H100", 0),
        lambda: NodeInfo("n", (GpuSlot(0, "H100", 1), GpuSlot(0, "H100", 1))),
        lambda: PlacementInput((node("n"),), domain_level="rack"),
        lambda: PlacementInput((node("n"), node("n"))),
        lambda: PlacementInput((node("n"),), demands=(demand("d", "s", "o", 1), demand("d", "s", "o", 2))),
        lambda: PlacementInput((node("n"),), current=(rep("x", "d", "s", "o", "n", (0,)),) * 2),
    ],
)
def test_caller_mistakes_raise_invalid_argument(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidArgument):
        build()


def test_same_plan_under_any_string_hash_seed() -> None:
    # Sets and dicts of strings iterate in an order that depends on PYTHONHASHSEED; the plan must not.
    script = (
        "from tests.unit.test_placement_rules import demand, node;"
        "from opscale.placement import PlacementInput, place;"
        "ns = tuple(node(f'n{i}', 4, s0=f'r{i % 3}', s1=f's{i % 2}') for i in range(8));"
        "ds = (demand('d', 'p', 'a', 9, cf=0.5, group='g', exchange={('d', 'f'): 1.0}),"
        " demand('d', 'd', 'f', 5, g=2, group='g'), demand('e', 's', 'o', 7, cf=0.25));"
        "print(repr(place(PlacementInput(ns, (), ds))))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "4242")
    }
    assert len(outputs) == 1 and "PlacementOutput" in outputs.pop()
