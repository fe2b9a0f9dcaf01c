"""The only moves placement makes: a single-GPU replica alone on its GPU onto an occupied GPU with room.

Such a move empties a GPU (energy, and room for whole-GPU replicas); any other move only costs a restart
(start-up time, lost KV cache), so none is made. A replica that is still to be started is simply started
at the better spot (same id). A running one is stopped and a twin started under a new id.

Why one pass is a fixpoint: a move only shrinks the room on occupied GPUs and never turns an empty GPU
into an occupied one, so a replica that found no target when its turn came finds none later in the pass.
Candidates go emptiest node first, so the replicas a node empties soonest leave first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opscale.placement.search import best_spot
from opscale.placement.state import CU, compute_units
from opscale.placement.types import PlacedReplica

if TYPE_CHECKING:
    from opscale.placement.algorithm import Planner


def consolidate(pl: Planner) -> int:
    """Make every GPU-freeing move of replicas of reconciled pools; returns how many were made."""
    cl = pl.cl
    starting = {r.id: i for i, r in enumerate(pl.start)}
    movable: list[tuple[int, int, int, PlacedReplica]] = []
    for pool in sorted(pl.demands):
        d = pl.demands[pool]
        if d.gpus_per_replica != 1:
            continue
        for r in pl.by_pool[pool]:
            n, positions = pl.at[r.id]
            if (len(positions), r.memory_bytes_per_gpu, r.compute_fraction) != (
                d.gpus_per_replica,
                d.memory_bytes_per_gpu,
                d.compute_fraction,
            ):
                continue  # single-GPU replicas in the pool's current shape only
            p = positions[0]
            full = compute_units(r.compute_fraction) >= CU or r.memory_bytes_per_gpu >= cl.mem_total[n][p]
            if not full and cl.sched[n] and cl.occ[n][p] == 1:
                movable.append((cl.used[n], n, p, r))
    moves = 0
    for _, n, p, r in sorted(movable, key=lambda m: (m[0], m[1], m[2], m[3].id)):
        if cl.occ[n][p] != 1:
            continue  # another replica moved onto this GPU: it is no longer alone
        d = pl.demands[r.pool]
        tiers = pl.tiers(d)
        here = cl.gtype[n][p]
        if d.gpu_types and here in d.gpu_types:
            tiers = tiers[: d.gpu_types.index(here) + 1]  # never to a less preferred type
        dom = pl.group_dom.get(d.group) if d.group else None
        cells = pl.cells(dom)
        cu = compute_units(r.compute_fraction)
        pid = pl.pids[r.pool]
        found = None
        for tier in tiers:
            found = best_spot(
                cl, pl.loc, pid, cells, set(cells), tier, 1, r.memory_bytes_per_gpu, cu,
                shared_only=True, exclude=(n, p),
            )  # fmt: skip
            if found is not None:
                break
        if found is None:
            continue
        (m, positions), _ = found
        cl.release(n, (p,), r.memory_bytes_per_gpu, cu)
        pl.loc.add(pid, n, (p,), -1)
        cl.occupy(m, positions, r.memory_bytes_per_gpu, cu)
        pl.loc.add(pid, m, positions)
        new_id = r.id if r.id in starting else pl.make_id(r.pool)
        moved = PlacedReplica(
            new_id, r.deployment, r.stage, r.operator, node=cl.names[m],
            gpu_indices=tuple(cl.gidx[m][q] for q in positions),
            memory_bytes_per_gpu=r.memory_bytes_per_gpu, compute_fraction=r.compute_fraction,
        )  # fmt: skip
        del pl.at[r.id]
        pl.at[moved.id] = (m, positions)
        running = pl.by_pool[r.pool]
        running[running.index(r)] = moved
        if r.id in starting:
            pl.start[starting[r.id]] = moved
        else:
            starting[moved.id] = len(pl.start)
            pl.start.append(moved)
            pl.stop_replica(
                r,
                f"{r.id}: moves to {moved.node} GPU {moved.gpu_indices} as {moved.id}; frees GPU "
                f"{cl.gidx[n][p]} of {cl.names[n]}",
            )
        moves += 1
    return moves
