"""Keeping a stage's operator pools together: the order pools are grown in, and a whole stage on one node.

Operator pools of one stage (prefill or decode attention, FFN/experts, embedding, lm_head) hand each
other the residual stream every layer — a 70B decode token crosses 162 hand-offs — so whether they share
a node (NVLink) or cross the network decides a token round's latency. Two rules keep them together:

* **Order** (``by_stage``): a group's pools are grown stage by stage, the stage with the most GPUs first,
  so each pool is placed while its peers' nodes still have room (placing by size alone interleaves the
  stages and splits attention from its FFN).
* **One node** (``pin_stage``): when a stage's missing replicas fit one node and its pools exchange
  activations, they all start on one node — the best fit among those with room, the stage's own node
  first when it already runs somewhere. Nothing is placed when no node takes the whole stage; its
  replicas are then placed one by one as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opscale.placement.state import compute_units
from opscale.placement.types import PoolDemand

if TYPE_CHECKING:
    from opscale.placement.algorithm import Planner

Pool = tuple[str, str, str]
MAX_NODES_TRIED = 3


def by_stage(
    demands: Mapping[Pool, PoolDemand], pools: list[Pool], size: Callable[[Pool], Any]
) -> list[Pool]:
    total: dict[tuple[str, str], int] = {}
    for p in pools:
        d = demands[p]
        total[p[:2]] = total.get(p[:2], 0) + d.replicas * d.gpus_per_replica
    return sorted(pools, key=lambda p: (-total[p[:2]], p[:2], size(p)))


def grow_group(pl: Planner, pools: Sequence[Pool], dom: int | None) -> None:
    """Grow a group's pools in ``dom``, stage by stage, each stage on one node when it can be."""
    for stage in dict.fromkeys(p[:2] for p in pools):
        peers = [p for p in pools if p[:2] == stage]
        if not pin_stage(pl, peers, dom):
            for pool in peers:
                pl.grow(pool, dom)


def pin_stage(pl: Planner, pools: Sequence[Pool], dom: int | None) -> bool:
    """Start the stage's missing replicas on one node (module docstring); False, nothing placed, if none
    takes them all."""
    stage = set(pools)
    if len(pools) < 2 or not any(
        (pool[0], *peer) in stage for pool in pools for peer in pl.demands[pool].exchange_bytes_per_token
    ):
        return False
    missing = {p: pl.demands[p].replicas - len(pl.by_pool[p]) for p in pools}
    if sum(missing.values()) <= 0:
        return False
    cl = pl.cl
    need = sum(m * pl.demands[p].gpus_per_replica for p, m in missing.items() if m > 0)
    cells = set(pl.cells(dom)) if dom is not None else set(cl.all_cells)
    home = {pl.at[r.id][0] for p in pools for r in pl.by_pool[p] if r.id in pl.at}
    types = pl.tiers(pl.demands[pools[0]])[0]
    nodes = [
        n
        for n in range(len(cl.names))
        if cl.sched[n] and cl.cell[n] in cells and any(len(cl.by_type[n].get(t, ())) >= need for t in types)
    ]
    nodes.sort(key=lambda n: (n not in home, cl.empty_gpus(n) < need, cl.empty_gpus(n), n))
    for n in nodes[:MAX_NODES_TRIED]:
        mark = (len(pl.start), len(pl.reasons), dict(pl.next_n))
        if all(_start_on(pl, p, n, types, missing[p]) for p in pools):
            pl.reasons.append(f"{'/'.join(pools[0][:2])}: stage kept on node {cl.names[n]} (NVLink)")
            return True
        pl.undo(mark, pools)
    return False


def _start_on(pl: Planner, pool: Pool, n: int, types: Sequence[str], count: int) -> bool:
    d = pl.demands[pool]
    cu = compute_units(d.compute_fraction)
    for _ in range(count):
        for t in types:
            r = pl.cl.pick_on_node(n, t, d.gpus_per_replica, d.memory_bytes_per_gpu, cu)
            if r is not None:
                pl.start_replica(pool, n, r[0])
                break
        else:
            return False
    return True
