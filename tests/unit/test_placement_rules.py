"""Placement rules, one behaviour per test, each expected placement derived in a comment.

Ranking of a spot (opscale/placement/search.py): type tier > GPUs opened > node opened > locality >
best fit > order. Scenarios below hold everything but the rule under test equal.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from opscale.placement import (
    GpuSlot,
    Infeasible,
    NodeInfo,
    PlacedReplica,
    PlacementInput,
    PlacementOutput,
    PoolDemand,
    Topology,
    place,
)

GIB = 2**30


def node(
    name: str,
    gpus: int = 8,
    kind: str = "H100",
    mem_gib: int = 80,
    *,
    zone: str = "z1",
    s2: str = "a",
    s1: str = "a",
    s0: str = "r1",
    schedulable: bool = True,
) -> NodeInfo:
    return NodeInfo(
        name,
        tuple(GpuSlot(i, kind, mem_gib * GIB) for i in range(gpus)),
        Topology(zone, s2, s1, s0),
        schedulable,
    )


def demand(
    deployment: str,
    stage: str,
    operator: str,
    replicas: int,
    *,
    g: int = 1,
    mem_gib: int = 10,
    cf: float = 1.0,
    types: tuple[str, ...] = (),
    group: str = "",
    exchange: Mapping[tuple[str, str], float] | None = None,
) -> PoolDemand:
    return PoolDemand(
        deployment, stage, operator, replicas, g, mem_gib * GIB, cf, types, group, exchange or {}
    )


def rep(
    rid: str,
    deployment: str,
    stage: str,
    operator: str,
    node_name: str,
    gpus: tuple[int, ...],
    *,
    mem_gib: int = 10,
    cf: float = 1.0,
) -> PlacedReplica:
    return PlacedReplica(rid, deployment, stage, operator, node_name, gpus, mem_gib * GIB, cf)


def spots(out: PlacementOutput) -> list[tuple[str, tuple[int, ...]]]:
    return [(r.node, r.gpu_indices) for r in out.start]


# ---- locality ---------------------------------------------------------------------------------------

# Six nodes at every distance from "peer": same rack, same S1, same S2, same zone, another zone. Each
# non-peer node carries one whole-GPU filler of another deployment, so every node is partly used with 7
# empty GPUs: packing ties everywhere and locality alone decides.
LOCALITY_NODES = (
    node("peer", s0="r1"),
    node("rack", s0="r1"),
    node("s1", s0="r2"),
    node("s2", s1="b", s0="r3"),
    node("zone", s2="b", s1="c", s0="r4"),
    node("far", zone="z2", s2="c", s1="d", s0="r5"),
)
FILLERS = tuple(rep(f"f-{n.name}", "other", "x", "y", n.name, (0,)) for n in LOCALITY_NODES[1:])
PEER = rep("p-0", "d", "prefill", "attention", "peer", (0,), cf=0.5)
P_DEMAND = demand("d", "prefill", "attention", 1, cf=0.5)


@pytest.mark.parametrize(
    ("cf", "cordoned", "expected"),
    [
        (0.5, (), ("peer", (0,))),  # fits beside the peer on its GPU: same GPU (5) and opens nothing
        (1.0, (), ("peer", (1,))),  # whole GPU: every node opens one GPU; the peer's node (4) wins
        (1.0, ("peer",), ("rack", (1,))),  # same rack (3) beats same S1 (2)
        (1.0, ("peer", "rack"), ("s1", (1,))),  # same S1 (2) beats same S2 (1)
        (1.0, ("peer", "rack", "s1"), ("s2", (1,))),  # same S2 (1) beats same zone (0.5)
        (1.0, ("peer", "rack", "s1", "s2"), ("zone", (1,))),  # same zone (0.5) beats another zone (0)
    ],
)
def test_locality_orders_same_gpu_node_rack_s1_s2_zone(
    cf: float, cordoned: tuple[str, ...], expected: tuple[str, tuple[int, ...]]
) -> None:
    nodes = tuple(NodeInfo(n.name, n.gpus, n.topology, n.name not in cordoned) for n in LOCALITY_NODES)
    d = demand("d", "decode", "attention", 1, cf=cf, exchange={("prefill", "attention"): 1000.0})
    out = place(PlacementInput(nodes, (*FILLERS, PEER), (P_DEMAND, d)))
    assert spots(out) == [expected]


def test_locality_is_weighted_by_bytes_per_token() -> None:
    # Peers of two pools sit on "s1" and "far"; the new replica exchanges 1000 B/token with the first
    # and 10 with the second, so it lands next to the first: 1000 x 4 + 10 x 0 > 1000 x 0 + 10 x 4.
    # Swapping the weights swaps the answer.
    nodes = LOCALITY_NODES[2:]
    current = (*FILLERS[1:], rep("a-0", "d", "s", "a", "s1", (1,)), rep("b-0", "d", "s", "b", "far", (1,)))
    for heavy, where in (("a", "s1"), ("b", "far")):
        weights = {("s", "a"): 10.0, ("s", "b"): 10.0, ("s", heavy): 1000.0}
        demands = (
            demand("d", "s", "a", 1),
            demand("d", "s", "b", 1),
            demand("d", "s", "c", 1, exchange=weights),
        )
        out = place(PlacementInput(nodes, current, demands))
        assert [r.node for r in out.start] == [where]


# ---- P/D deployment group in one network domain -----------------------------------------------------


def test_new_group_takes_the_best_fitting_domain_and_stays_in_it() -> None:
    # S1 "big" has 16 GPUs, S1 "small" 8; the group needs 4 + 4 = 8 whole GPUs. Both fit; best fit picks
    # "small" (0 left over vs 8), and every replica of both pools lands there.
    nodes = (node("b1", s1="big"), node("b2", s1="big", s0="r2"), node("s1", s1="small", s0="r3"))
    demands = (
        demand("d", "prefill", "attention", 4, group="g"),
        demand("d", "decode", "attention", 4, group="g"),
    )
    out = place(PlacementInput(nodes, (), demands))
    assert {r.node for r in out.start} == {"s1"} and len(out.start) == 8 and not out.infeasible


def test_running_group_keeps_its_domain_and_reports_domain_capacity_instead_of_leaving_it() -> None:
    # The group runs 7 replicas in "small" (8 GPUs); growing decode by 3 finds 1 GPU there. It must not
    # spill into "big" (the KV-cache transfer would cross S1): 1 starts, 2 are infeasible, and the
    # reason names the domain.
    nodes = (node("b1", s1="big"), node("s1", s1="small", s0="r3"))
    current = tuple(
        rep(f"d-prefill-attention-{i}", "d", "prefill", "attention", "s1", (i,)) for i in range(4)
    ) + tuple(rep(f"d-decode-attention-{i}", "d", "decode", "attention", "s1", (4 + i,)) for i in range(3))
    demands = (
        demand("d", "prefill", "attention", 4, group="g"),
        demand("d", "decode", "attention", 6, group="g"),
    )
    out = place(PlacementInput(nodes, current, demands))
    assert spots(out) == [("s1", (7,))]
    [short] = out.infeasible
    assert (short.stage, short.requested, short.placed) == ("decode", 6, 4)
    assert "s1 domain z1/a/small" in short.reason and "capacity" in short.reason


# ---- preferred GPU type and spill-over --------------------------------------------------------------


def test_spill_over_follows_the_preference_order_and_never_uses_other_types() -> None:
    # 2 H100, 2 H200, 8 A100. Preference H100 then H200: 3 replicas -> 2 on H100, 1 on H200 (the
    # preferred type even though the H100 node then has no room left). A100 is never compatible, so of
    # 6 requested only 4 fit and the reason names the types.
    nodes = (node("h100", 2, "H100"), node("h200", 2, "H200", 141), node("a100", 8, "A100"))
    d = demand("d", "decode", "ffn", 3, types=("H100", "H200"))
    out = place(PlacementInput(nodes, (), (d,)))
    assert spots(out) == [("h100", (0,)), ("h100", (1,)), ("h200", (0,))]
    assert any("spilled over to H200" in r for r in out.reasons)
    out = place(PlacementInput(nodes, (), (demand("d", "decode", "ffn", 6, types=("H100", "H200")),)))
    assert [r.node for r in out.start].count("a100") == 0
    assert out.infeasible == (Infeasible("d", "decode", "ffn", 6, 4, out.infeasible[0].reason),)
    assert "H100/H200" in out.infeasible[0].reason


# ---- packing ------------------------------------------------------------------------------------------


def test_fractional_replicas_share_a_gpu_before_opening_another() -> None:
    # compute 0.25 and 18 GiB each: four fit on one 80 GiB GPU, whose usable share is 72 GiB
    # (4 x 0.25 = 1.0, 4 x 18 = 72); the fifth opens GPU 1. Co-location across pools works the same way.
    d = demand("d", "decode", "attention", 5, cf=0.25, mem_gib=18)
    out = place(PlacementInput((node("n", 2),), (), (d,)))
    assert spots(out) == [("n", (0,))] * 4 + [("n", (1,))]


def test_whole_gpus_go_to_the_fullest_node_that_fits_so_nodes_empty() -> None:
    # "busy" has 6 of 8 GPUs taken, "light" 2 of 8, "idle" none. A 2-GPU replica fits all three; it goes
    # to "busy" (0 empty GPUs left there) and leaves "idle" asleep; the next one fits only "light" of the
    # partly used nodes (4 left) rather than waking "idle".
    nodes = (node("idle"), node("light", s0="r2"), node("busy", s0="r3"))
    current = (
        *(rep(f"o-{i}", "other", "x", "y", "busy", (i,)) for i in range(6)),
        *(rep(f"o-l{i}", "other", "x", "y", "light", (i,)) for i in range(2)),
    )
    out = place(PlacementInput(nodes, current, (demand("d", "prefill", "ffn", 2, g=2),)))
    assert spots(out) == [("busy", (6, 7)), ("light", (2, 3))]


def test_multi_gpu_replica_stays_on_one_node() -> None:
    # Four 2-GPU nodes have 8 free GPUs, but a 4-GPU (tensor-parallel) replica needs them on one node.
    nodes = tuple(node(f"n{i}", 2, s0=f"r{i}") for i in range(4))
    out = place(PlacementInput(nodes, (), (demand("d", "decode", "model", 1, g=4),)))
    assert out.start == ()
    assert (
        "needs 4 GPUs" in out.infeasible[0].reason and "most any schedulable node" in out.infeasible[0].reason
    )


def test_a_replica_alone_on_its_gpu_moves_only_when_that_frees_the_gpu() -> None:
    # Two half-GPU replicas of one pool, each alone on its GPU: moving the one on GPU 0 (candidates go in
    # node, then GPU order) onto GPU 1 frees GPU 0, so it is moved (stop + start under a new id); then
    # GPU 1 is shared and nothing else may move. The whole-GPU replica never moves: that frees nothing.
    current = (
        rep("d-s-a-0", "d", "s", "a", "n", (0,), cf=0.5),
        rep("d-s-a-1", "d", "s", "a", "n", (1,), cf=0.5),
        rep("d-s-w-0", "d", "s", "w", "n", (2,)),
    )
    demands = (demand("d", "s", "a", 2, cf=0.5), demand("d", "s", "w", 1))
    out = place(PlacementInput((node("n", 4),), current, demands))
    assert [r.id for r in out.stop] == ["d-s-a-0"] and spots(out) == [("n", (1,))]
    assert any("frees GPU 0" in r for r in out.reasons)


# ---- scale-in ---------------------------------------------------------------------------------------


def test_scale_in_stops_replicas_that_empty_gpus_and_nodes_first() -> None:
    # shared: shares GPU 0 of "a" with another deployment (stopping it frees no GPU).
    # alone_busy: alone on GPU 1 of "a" (a has 2 GPUs in use). alone_light: alone on "b" (1 in use).
    # 3 -> 2 stops alone_light (frees a GPU and the whole node b); 3 -> 1 also stops alone_busy.
    nodes = (node("a"), node("b", s0="r2"))
    current = (
        rep("o", "other", "x", "y", "a", (0,), cf=0.5),
        rep("shared", "d", "s", "o", "a", (0,), cf=0.5),
        rep("alone_busy", "d", "s", "o", "a", (1,), cf=0.5),
        rep("alone_light", "d", "s", "o", "b", (0,), cf=0.5),
    )
    out = place(PlacementInput(nodes, current, (demand("d", "s", "o", 2, cf=0.5),)))
    assert [r.id for r in out.stop] == ["alone_light"] and out.start == ()
    out = place(PlacementInput(nodes, current, (demand("d", "s", "o", 1, cf=0.5),)))
    assert sorted(r.id for r in out.stop) == ["alone_busy", "alone_light"]
    assert [r.id for r in out.keep] == ["o", "shared"]


def test_cordoned_node_keeps_its_replicas_gets_no_new_ones_and_loses_them_first() -> None:
    nodes = (node("cordoned", 2, schedulable=False), node("ok", 2, s0="r2"))
    current = (rep("c", "d", "s", "o", "cordoned", (0,)), rep("k", "d", "s", "o", "ok", (0,)))
    # same count: nothing moves; growing by 2 uses "ok" GPU 1 only (cordoned GPU 1 is free but off limits)
    assert place(PlacementInput(nodes, current, (demand("d", "s", "o", 2),))).start == ()
    out = place(PlacementInput(nodes, current, (demand("d", "s", "o", 4),)))
    assert spots(out) == [("ok", (1,))] and out.infeasible[0].placed == 3
    # shrinking by one stops the replica on the cordoned node, although it is not the emptier choice
    out = place(PlacementInput(nodes, current, (demand("d", "s", "o", 1),)))
    assert [r.id for r in out.stop] == ["c"]


def test_replicas_on_lost_nodes_are_stopped_and_replaced_with_fresh_ids() -> None:
    current = (rep("d-s-o-0", "d", "s", "o", "gone", (0,)), rep("d-s-o-1", "d", "s", "o", "n", (0,)))
    out = place(PlacementInput((node("n", 2),), current, (demand("d", "s", "o", 2),)))
    assert [r.id for r in out.stop] == ["d-s-o-0"] and [r.id for r in out.keep] == ["d-s-o-1"]
    # id 0 was in use by the lost replica and 1 by the kept one: the replacement is number 2
    assert [(r.id, r.node, r.gpu_indices) for r in out.start] == [("d-s-o-2", "n", (1,))]
    assert any("node gone is gone" in r for r in out.reasons)


def test_only_named_deployments_and_pools_are_reconciled() -> None:
    # "other" is not in demands and pool d/s/kept is not either: both keep running and keep their GPUs,
    # so d/s/o (2 wanted) finds only 1 free GPU.
    current = (rep("x", "other", "s", "o", "n", (0,)), rep("y", "d", "s", "kept", "n", (1,)))
    out = place(PlacementInput((node("n", 3),), current, (demand("d", "s", "o", 2),)))
    assert out.stop == () and [r.id for r in out.keep] == ["x", "y"] and spots(out) == [("n", (2,))]
    assert out.infeasible[0].placed == 1


# ---- infeasible, with reasons -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "words"),
    [
        (demand("d", "s", "o", 1, mem_gib=100), "GPU memory"),
        (demand("d", "s", "o", 1, g=16), "GPUs per node"),
        (demand("d", "s", "o", 1, types=("B200",)), "no schedulable GPUs of B200"),
        (demand("d", "s", "o", 20), "capacity"),
    ],
)
def test_infeasible_pools_are_data_with_the_shortage_named(d: PoolDemand, words: str) -> None:
    out = place(PlacementInput((node("n"),), (), (d,)))
    [short] = out.infeasible
    assert words in short.reason
    assert short.placed == (8 if d.replicas == 20 else 0) == len(out.start)  # what fits is still placed


def test_ids_are_deterministic_and_can_come_from_the_caller() -> None:
    inp = PlacementInput((node("n"),), (), (demand("d", "s", "o", 3),))
    assert place(inp) == place(inp)
    assert [r.id for r in place(inp).start] == ["d-s-o-0", "d-s-o-1", "d-s-o-2"]
    out = place(inp, new_id=lambda d, s, o, n: f"{o}.{n}")
    assert [r.id for r in out.start] == ["o.0", "o.1", "o.2"]
