"""Placement: inventory + running replicas + desired counts + topology -> start / stop / keep / infeasible.

Pure (CONVENTIONS habit 4): no clock, no randomness, no I/O; the same input gives the same output, new
replica ids included. Capacity that runs out is answered as ``Infeasible`` data, never as an exception.

Steps, in order, and why that order:

1. **Account for what runs.** Replicas on nodes missing from the inventory (or on GPU indices the node no
   longer has) are gone: they are reported in ``stop`` (the caller marks them lost) and, if their pool is
   reconciled, replaced below. Every other replica — of every deployment — occupies its GPUs. Only
   deployments named in ``demands`` are reconciled; the rest are kept untouched. ``leaving`` replicas
   (draining, or on a draining node) occupy their GPUs but count towards no pool and are never moved or
   stopped here, so their pools get replacements first.
2. **Pin deployment groups.** All pools sharing a ``group`` (a P/D deployment group) live in one network
   domain at ``domain_level`` (HeteroScale: KV-cache transfer stays under one switch tier). A group that
   runs keeps the domain holding most of its replicas (moving a group is churn). Decided before scale-in
   (which then stops out-of-domain replicas first) and again after it (a group scaled in to nothing is
   new).
3. **Scale in** pools above their desired count. Victims in this order: on non-schedulable nodes (they
   have to go some day) > outside the group's domain > GPUs the replica has to itself (stopping it empties
   them) > on the node with the fewest occupied GPUs (it empties the node first) > id. One sort per pool
   (not re-scored after each victim): O(r log r).
4. **Scale out** pools below their desired count: groups first (by name; they are the constrained ones),
   then ungrouped pools; a group stage by stage, each stage on one node when it fits one
   (``stages``: operator pools hand activations to each other every layer); within a stage or scope,
   pools with more GPUs per replica and more memory first (first-fit-decreasing packs better). A new
   group is placed tentatively in candidate domains (``domains.domain_order``: fits whole > fits on
   preferred types > best fit) and stays in the first where it fits whole; failed trials are undone
   exactly. Each replica goes to the best spot found by ``search.best_spot`` (type tier > opens no GPU >
   opens no node > locality > best fit > order). A pool that runs out is reported with what was short
   (``diagnose.shortfall``); what fitted is still started. A replica is never half-placed: all its GPUs
   are on one node (one NVLink domain) or it is not placed.
5. **Consolidate** (``moves``): a single-GPU replica alone on its GPU moves onto an occupied GPU with
   room — the only move that frees a GPU, so the only move made. If that freed room a short pool could
   use, step 4 is retried for the short pools, then step 5 again, until neither changes anything; the
   last consolidation always follows the last start, so re-running ``place`` on its output is a no-op.

Complexity: O(nodes + running replicas) to build the state, O(cells in scope + peer nodes) candidates of
O(GPUs per node) per placed replica (racks indexed lazily), O(domains) + ≤ MAX_TRIALS trials a new group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opscale.errors import InvalidArgument
from opscale.placement.diagnose import shortfall
from opscale.placement.domains import MAX_TRIALS, domain_order
from opscale.placement.moves import consolidate
from opscale.placement.search import Locality, best_spot
from opscale.placement.stages import by_stage, grow_group
from opscale.placement.state import CU, Cluster, compute_units
from opscale.placement.types import (
    Infeasible,
    PlacedReplica,
    PlacementInput,
    PlacementOutput,
    PoolDemand,
)

Pool = tuple[str, str, str]
NewId = Callable[[str, str, str, int], str]


def _default_id(deployment: str, stage: str, operator: str, n: int) -> str:
    return f"{deployment}-{stage}-{operator}-{n}"


class Planner:
    def __init__(self, inp: PlacementInput, new_id: NewId | None) -> None:
        self.inp = inp
        self.cl = Cluster(inp.nodes, inp.domain_level)
        self.demands: dict[Pool, PoolDemand] = {d.pool: d for d in inp.demands}
        self.reconciled = {d.deployment for d in inp.demands}
        self.pids: dict[Pool, int] = {p: i for i, p in enumerate(sorted(self.demands))}
        self.new_id = new_id or _default_id
        self.used_ids = {r.id for r in (*inp.current, *inp.leaving)}
        self.next_n: dict[Pool, int] = {}
        self.at: dict[str, tuple[int, tuple[int, ...]]] = {}  # running replica id -> (node, positions)
        self.by_pool: dict[Pool, list[PlacedReplica]] = {p: [] for p in self.demands}
        self.stopped: set[str] = set()
        self.stop: list[PlacedReplica] = []
        self.start: list[PlacedReplica] = []
        self.short: dict[Pool, tuple[Infeasible, str]] = {}  # pool -> (record, reason line)
        self.grown: list[tuple[Pool, int | None]] = []  # pools scale-out visited, in order, with scope
        self.reasons: list[str] = []
        self.all_types = sorted({t for types in self.cl.gtype for t in types})
        pool_of = {i: p for p, i in self.pids.items()}
        self.loc = Locality(
            self.cl, self._peers(), lambda q: [self.at[r.id] for r in self.by_pool[pool_of[q]]]
        )
        self.group_dom: dict[str, int] = {}
        self.shrunk: set[Pool] = set()  # pools scale-in stopped replicas of

    def _peers(self) -> dict[int, tuple[tuple[int, float], ...]]:
        weights: dict[tuple[int, int], float] = {}
        for d in self.demands.values():
            for (stage, operator), w in d.exchange_bytes_per_token.items():
                q = (d.deployment, stage, operator)
                if q in self.demands and w > 0:
                    a, b = self.pids[d.pool], self.pids[q]
                    for key in ((a, b), (b, a)):  # exchange is two-way: either side may declare it
                        weights[key] = max(weights.get(key, 0.0), w)
        peers: dict[int, list[tuple[int, float]]] = {}
        for (a, b), w in sorted(weights.items()):
            peers.setdefault(a, []).append((b, w))
        return {a: tuple(v) for a, v in peers.items()}

    # ---- 1. what runs -----------------------------------------------------------------------------

    def account(self) -> None:
        cl, units = self.cl, {1.0: CU}
        index, pos, at = cl.index, cl.pos, self.at
        leaving = len(self.inp.current)
        for i, r in enumerate((*self.inp.current, *self.inp.leaving)):
            n = index.get(r.node)
            gi = r.gpu_indices
            if n is None:
                positions: tuple[int, ...] = ()
            elif len(gi) == 1:
                positions = (pos[n].get(gi[0], -1),)
            else:
                positions = tuple(pos[n].get(i, -1) for i in gi)
            if n is None or -1 in positions:
                what = f"node {r.node} is gone" if n is None else f"GPU {r.gpu_indices} gone from {r.node}"
                self.stop_replica(r, f"{r.id}: {what}; stop and mark lost")
                continue
            cu = units.get(r.compute_fraction)
            if cu is None:
                cu = units[r.compute_fraction] = compute_units(r.compute_fraction)
            cl.occupy_fresh(n, positions, r.memory_bytes_per_gpu, cu)
            at[r.id] = (n, positions)
            if i < leaving and r.deployment in self.reconciled:  # a leaving replica counts for no pool
                running = self.by_pool.get((r.deployment, r.stage, r.operator))
                if running is not None:
                    running.append(r)

    def stop_replica(self, r: PlacedReplica, reason: str | None = None) -> None:
        self.stop.append(r)
        self.stopped.add(r.id)
        if reason:
            self.reasons.append(reason)

    # ---- 2. group domains -------------------------------------------------------------------------

    def groups(self) -> dict[str, list[Pool]]:
        groups: dict[str, list[Pool]] = {}
        for pool in sorted(self.demands):
            if self.demands[pool].group:
                groups.setdefault(self.demands[pool].group, []).append(pool)
        self.vote(groups, explain=False)
        return groups

    def vote(self, groups: dict[str, list[Pool]], *, explain: bool) -> None:
        """Pin each running group to the domain holding most of its replicas. Runs before scale-in (which
        stops out-of-domain replicas first) and again after it for the groups that shrank: a group scaled
        in to nothing is new."""
        for name, pools in groups.items():
            if explain and not any(p in self.shrunk for p in pools):
                if name in self.group_dom:
                    self.reasons.append(f"group {name}: stays in {self._scope(self.group_dom[name])}")
                continue
            self.group_dom.pop(name, None)
            votes: dict[int, int] = {}
            for pool in pools:
                for r in self.by_pool[pool]:
                    n = self.at[r.id][0]
                    if self.cl.sched[n]:
                        votes[self.cl.domain[n]] = votes.get(self.cl.domain[n], 0) + 1
            if votes:
                dom = min(votes, key=lambda dm: (-votes[dm], self.cl.path_name(dm)))
                self.group_dom[name] = dom
                if explain:
                    self.reasons.append(
                        f"group {name}: stays in {self._scope(dom)}, where {votes[dom]} of its replicas run"
                    )

    def _scope(self, dom: int | None) -> str:
        if dom is None:
            return "the cluster"
        return f"{self.inp.domain_level} domain {self.cl.path_name(dom)}"

    # ---- 3. scale in ------------------------------------------------------------------------------

    def scale_in(self) -> None:
        cl = self.cl
        for pool in sorted(self.demands):
            d, running = self.demands[pool], self.by_pool[pool]
            excess = len(running) - d.replicas
            if excess <= 0:
                continue
            dom = self.group_dom.get(d.group) if d.group else None

            def order(r: PlacedReplica, dom: int | None = dom) -> tuple[bool, bool, int, int, str]:
                n, positions = self.at[r.id]
                shared = sum(1 for p in positions if cl.occ[n][p] > 1)
                return (cl.sched[n], dom is None or cl.domain[n] == dom, shared, cl.used[n], r.id)

            victims = sorted(running, key=order)[:excess]
            self.shrunk.add(pool)
            gone = {r.id for r in victims}
            for r in victims:
                n, positions = self.at.pop(r.id)
                cl.release(n, positions, r.memory_bytes_per_gpu, compute_units(r.compute_fraction))
                self.loc.add(self.pids[pool], n, positions, -1)
                self.stop_replica(r)
            self.by_pool[pool] = [r for r in running if r.id not in gone]
            self.reasons.append(
                f"{'/'.join(pool)}: scale in {len(running)} -> {d.replicas}: stop {', '.join(sorted(gone))}"
            )

    # ---- 4. scale out -----------------------------------------------------------------------------

    def scale_out(self, groups: dict[str, list[Pool]]) -> None:
        def size(pool: Pool) -> tuple[int, int, Pool]:
            d = self.demands[pool]
            return (-d.gpus_per_replica, -d.memory_bytes_per_gpu, pool)

        for name in sorted(groups):
            pools = by_stage(self.demands, groups[name], size)
            if not any(self.demands[p].replicas > len(self.by_pool[p]) for p in pools):
                continue
            dom = self.group_dom.get(name)
            placed = False
            if dom is None:
                dom, placed = self._try_domains(name, pools)
            if dom is not None:
                self.group_dom[name] = dom
            for pool in pools:
                self.grown.append((pool, dom))
            if not placed:
                grow_group(self, pools, dom)
        for pool in sorted((p for p, d in self.demands.items() if not d.group), key=size):
            self.grown.append((pool, None))
            self.grow(pool, None)

    def _try_domains(self, name: str, pools: Sequence[Pool]) -> tuple[int | None, bool]:
        """Place a new group tentatively in the candidate domains, best estimate first; the first where it
        fits whole wins and stays placed (-> (domain, True)). Otherwise -> (the domain that placed the
        most, False), for the caller to place there again. Failed trials are undone exactly: release
        the GPUs, forget ids, reasons and shortfalls."""
        running = {p: len(self.by_pool[p]) for p in pools}
        order = domain_order(self.cl, [self.demands[p] for p in pools], running, self.all_types)
        # Trials go in estimate order (fits first) and stop at the first whole fit. A domain the estimate
        # rejects cannot hold the whole group (compute is a hard limit), but when no domain can, the
        # trials still find the one that holds the most of it.
        candidates = [dom for dom, _ in order][:MAX_TRIALS]
        best: tuple[int, int] | None = None
        for dom in candidates:
            mark = (len(self.start), len(self.reasons), dict(self.next_n))
            grow_group(self, pools, dom)
            if not any(p in self.short for p in pools):
                self.reasons.insert(mark[1], f"group {name}: new, placed in {self._scope(dom)}")
                return dom, True
            placed = len(self.start) - mark[0]
            self.undo(mark, pools)
            if best is None or placed > best[0]:
                best = (placed, dom)
        if best is None:
            return None, False
        self.reasons.append(
            f"group {name}: new; fits whole in none of the {len(candidates)} domains tried, placed in "
            f"{self._scope(best[1])}, where most of it fits"
        )
        return best[1], False

    def undo(self, mark: tuple[int, int, dict[Pool, int]], pools: Sequence[Pool]) -> None:
        n_start, n_reasons, next_n = mark
        for r in reversed(self.start[n_start:]):
            n, positions = self.at.pop(r.id)
            self.cl.release(n, positions, r.memory_bytes_per_gpu, compute_units(r.compute_fraction))
            self.loc.add(self.pids[r.pool], n, positions, -1)
            self.by_pool[r.pool].pop()
            self.used_ids.discard(r.id)
        del self.start[n_start:]
        del self.reasons[n_reasons:]
        self.next_n = next_n
        for pool in pools:
            self.short.pop(pool, None)

    def retry_short(self) -> bool:
        """Grow the pools that came up short again (moves freed GPUs); True when any replica started."""
        before = len(self.start)
        for pool, dom in self.grown:
            if self.short.pop(pool, None) is not None:
                self.grow(pool, dom)
        return len(self.start) > before

    def cells(self, dom: int | None) -> list[int]:
        return self.cl.all_cells if dom is None else self.cl.domain_cells.get(dom, [])

    def tiers(self, d: PoolDemand) -> list[tuple[str, ...]]:
        return [(t,) for t in d.gpu_types] if d.gpu_types else [tuple(self.all_types)]

    def start_replica(self, pool: Pool, n: int, positions: tuple[int, ...]) -> PlacedReplica:
        d, cl = self.demands[pool], self.cl
        cl.occupy(n, positions, d.memory_bytes_per_gpu, compute_units(d.compute_fraction))
        self.loc.add(self.pids[pool], n, positions)
        r = PlacedReplica(
            self.make_id(pool),
            *pool,
            node=cl.names[n],
            gpu_indices=tuple(cl.gidx[n][p] for p in positions),
            memory_bytes_per_gpu=d.memory_bytes_per_gpu,
            compute_fraction=d.compute_fraction,
        )
        self.at[r.id] = (n, positions)
        self.by_pool[pool].append(r)
        self.start.append(r)
        return r

    def grow(self, pool: Pool, dom: int | None) -> None:
        d = self.demands[pool]
        want = d.replicas - len(self.by_pool[pool])
        if want <= 0:
            return
        cl, pid = self.cl, self.pids[pool]
        cells = self.cells(dom)
        cell_set = set(cells)
        cu = compute_units(d.compute_fraction)
        tiers = self.tiers(d)
        spilled: dict[str, int] = {}
        placed = 0
        if d.group and dom is None:
            cells = []
        for _ in range(want):
            found = None
            for tier in tiers:
                found = best_spot(
                    cl, self.loc, pid, cells, cell_set, tier, d.gpus_per_replica, d.memory_bytes_per_gpu, cu
                )
                if found is not None:
                    break
            if found is None:
                break
            (n, positions), t = found
            self.start_replica(pool, n, positions)
            placed += 1
            if d.gpu_types and t != d.gpu_types[0]:
                spilled[t] = spilled.get(t, 0) + 1
        name = "/".join(pool)
        if placed:
            self.reasons.append(f"{name}: start {placed} in {self._scope(dom)}")
        for t, count in sorted(spilled.items()):
            self.reasons.append(
                f"{name}: {count} replica(s) spilled over to {t}: no room on "
                f"{d.gpu_types[0]} in {self._scope(dom)}"
            )
        if placed < want:
            why = (
                f"domain capacity: no {self.inp.domain_level} domain has schedulable GPUs for group {d.group}"
                if d.group and dom is None
                else shortfall(cl, d, cells, self._scope(dom))
            )
            have = len(self.by_pool[pool])
            self.short[pool] = (
                Infeasible(*pool, requested=d.replicas, placed=have, reason=why),
                f"{name}: {d.replicas - have} of {d.replicas} replica(s) do not fit: {why}",
            )

    def make_id(self, pool: Pool) -> str:
        first = self.next_n.get(pool, 0)
        for n in range(first, first + len(self.used_ids) + 2):
            rid = self.new_id(*pool, n)
            if rid not in self.used_ids:
                self.next_n[pool] = n + 1
                self.used_ids.add(rid)
                return rid
        raise InvalidArgument(
            f"new_id keeps answering ids already in use for {'/'.join(pool)}", field="new_id"
        )

    def output(self) -> PlacementOutput:
        keep = tuple(r for r in self.inp.current if r.id not in self.stopped)
        return PlacementOutput(
            start=tuple(self.start),
            stop=tuple(self.stop),
            keep=keep,
            infeasible=tuple(self.short[p][0] for p in sorted(self.short)),
            reasons=(*self.reasons, *(self.short[p][1] for p in sorted(self.short))),
        )


def place(inp: PlacementInput, *, new_id: NewId | None = None) -> PlacementOutput:
    """Plan replicas for ``inp.demands`` on ``inp.nodes``; see the module docstring for the rules.
    ``new_id(deployment, stage, operator, n)`` names new replicas (default ``"{d}-{s}-{o}-{n}"``, with
    ``n`` counting up from 0 past ids already in use), so the same input gives the same ids."""
    planner = Planner(inp, new_id)
    planner.account()
    groups = planner.groups()
    planner.scale_in()
    planner.vote(groups, explain=True)
    planner.scale_out(groups)
    # Moves can free GPUs a short pool could use, and new replicas can give a lonely one somewhere to
    # move to: alternate until neither happens. Each round either starts replicas (bounded by the
    # demands) or ends, so this terminates; the last consolidation always runs after the last start,
    # which is what makes re-running on the output a no-op.
    while consolidate(planner) and planner.retry_short():
        pass
    return planner.output()
