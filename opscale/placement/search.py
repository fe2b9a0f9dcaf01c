"""Where one replica goes: locality scores and the best-spot search over a scope of cells.

The ranking of a spot, lexicographic (smaller is better), and why:

1. GPU type tier — the pool's preferred type first; a compatible type only when the preferred one has no
   room anywhere in the scope (spill-over). The caller loops over tiers.
2. GPUs opened — co-locate on occupied GPUs with room before touching an empty GPU (the paper's best
   fit: "opens a new GPU only when no existing one fits"); an idle GPU still draws its idle power.
3. Node opened — fill partly used nodes before waking an empty one, so whole nodes stay empty (energy).
4. Locality, highest first — Σ over peer pools of bytes/token × affinity of the nearest peer replica:
   same GPU 5 > same node or NVLink domain 4 > same S0 (rack) 3 > same S1 2 > same S2 1 > same zone 0.5
   > anywhere 0. Packing comes first because the P/D group is already pinned to one network domain, so the
   worst locality left is bounded, while a wasted GPU costs all the time.
5. Best fit — fewest empty GPUs left on the node, then least leftover memory+compute on the chosen GPUs.
6. Node order, then GPU positions — determinism.

Candidates per replica are not all GPUs, and they are looked at in three phases that follow the first
two ranks, so a phase runs only when the ones before found nothing: (1) per cell the tightest occupied
GPU with room, plus up to ``PEER_NODES`` nodes that hold peer replicas (the only places where GPU- and
node-level locality differ from the cell's); (2) per cell the partly used node with the fewest empty
GPUs that still fit (``buckets``); (3) per cell the smallest empty node. Cost per replica: O(cells in
scope) set look-ups plus O(candidates × GPUs per node) for the phase that finds something.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opscale.placement.state import CU, Cluster

AFFINITY = (0.5, 1.0, 2.0, 3.0, 4.0)  # zone, s2, s1, s0, NVLink domain (LEVELS order)
SAME_NODE = 4.0
SAME_GPU = 5.0
PEER_NODES = 16

Spot = tuple[int, tuple[int, ...]]  # node, GPU positions


class Locality:
    """Counts of placed replicas per pool at every topology level, to score a spot against peers.

    Counted lazily: a pool's counts are built from ``source(pool)`` (its replicas' spots right now) the
    first time a peer asks, and kept up to date by ``add`` from then on. An incremental change that grows
    five deployments then counts only their pools, not the thousands of replicas that just stay put."""

    def __init__(self, cl: Cluster, peers: dict[int, tuple[tuple[int, float], ...]],
                 source: Callable[[int], Iterable[Spot]]) -> None:  # fmt: skip
        self.cl = cl
        self.peers = peers
        self.source = source
        self.built: set[int] = set()
        self.gpu_cnt: dict[tuple[int, int, int], int] = {}
        self.node_cnt: dict[tuple[int, int], int] = {}
        self.path_cnt: dict[tuple[int, int], int] = {}
        self.pool_nodes: dict[int, dict[int, int]] = {}

    def ensure(self, pool: int) -> None:
        if pool not in self.built:
            self.built.add(pool)
            for n, positions in self.source(pool):
                self.add(pool, n, positions)

    def nodes_of(self, pool: int) -> dict[int, int]:
        self.ensure(pool)
        return self.pool_nodes.get(pool, {})

    def add(self, pool: int, n: int, positions: Sequence[int], sign: int = 1) -> None:
        if pool not in self.built:
            return  # counted from the source when first needed
        for p in positions:
            self.gpu_cnt[(pool, n, p)] = self.gpu_cnt.get((pool, n, p), 0) + sign
        self.node_cnt[(pool, n)] = self.node_cnt.get((pool, n), 0) + sign
        nodes = self.pool_nodes.setdefault(pool, {})
        nodes[n] = nodes.get(n, 0) + sign
        if nodes[n] == 0:
            del nodes[n]
        for pid in self.cl.level_ids[n]:
            self.path_cnt[(pool, pid)] = self.path_cnt.get((pool, pid), 0) + sign

    def score(self, pool: int, n: int, positions: Sequence[int]) -> float:
        total = 0.0
        ids = self.cl.level_ids[n]
        for q, weight in self.peers.get(pool, ()):
            if q not in self.built:
                self.ensure(q)
            if self.node_cnt.get((q, n)):
                aff = SAME_GPU if any(self.gpu_cnt.get((q, n, p)) for p in positions) else SAME_NODE
            else:
                aff = 0.0
                for depth in range(len(ids) - 1, -1, -1):
                    if self.path_cnt.get((q, ids[depth])):
                        aff = AFFINITY[depth]
                        break
            total += weight * aff
        return total


def best_spot(
    cl: Cluster,
    loc: Locality,
    pool: int,
    cells: Sequence[int],
    cell_set: set[int],
    tier: Sequence[str],
    g: int,
    mem: int,
    cu: int,
    *,
    shared_only: bool = False,
    exclude: tuple[int, int] = (-1, -1),
) -> tuple[Spot, str] | None:
    """The best spot for one replica among the GPU types of one tier, or None when none fits.
    ``shared_only``: only occupied GPUs (a move that must not open one); ``exclude``: a (node, position)
    that is not a target (the GPU a moving replica leaves)."""
    best_key: tuple[int, bool, float, int, float, int, tuple[int, ...]] | None = None
    best: tuple[Spot, str] | None = None

    def consider(n: int, t: str, positions: tuple[int, ...], opens: int, slack: float) -> None:
        nonlocal best_key, best
        key = (
            opens,
            cl.used[n] == 0,
            -loc.score(pool, n, positions),
            cl.empty_gpus(n) - opens,
            slack,
            n,
            positions,
        )
        if best_key is None or key < best_key:
            best_key, best = key, ((n, positions), t)

    indexes = [cl.cell_index(c) for c in cells]
    # Phase 1: occupied GPUs with room (they open nothing), and the nodes of peers (locality).
    for t in tier:
        for ci in indexes:
            part = ci.partial.get(t)
            if not part:
                continue
            if g == 1:
                top: tuple[int, float, int, int] | None = None
                for n, p in part:
                    fm, fc = cl.free_mem[n][p], cl.free_cu[n][p]
                    if fm >= mem and fc >= cu and (n, p) != exclude:
                        k = (cl.empty_gpus(n), (fc - cu) / CU + (fm - mem) / cl.mem_total[n][p], n, p)
                        if top is None or k < top:
                            top = k
                if top is not None:
                    consider(top[2], t, (top[3],), 0, top[1])
            else:
                for n in sorted({n for n, _ in part}):
                    r = cl.pick_on_node(n, t, g, mem, cu, exclude[1] if n == exclude[0] else -1)
                    if r is not None and (not shared_only or r[1] == 0):
                        consider(n, t, r[0], r[1], r[2])
        seen = 0
        for q, _ in loc.peers.get(pool, ()):
            for n in loc.nodes_of(q):
                if seen >= PEER_NODES:
                    break
                if not cl.sched[n] or cl.cell[n] not in cell_set:
                    continue
                skip = exclude[1] if n == exclude[0] else -1
                r = cl.pick_on_node(n, t, g, mem, cu, skip)
                if r is None or (shared_only and r[1] > 0):
                    continue
                seen += 1
                consider(n, t, r[0], r[1], r[2])
                if g == 1:  # same-GPU affinity: every occupied GPU with room on a peer's node is a spot
                    fmem, fcu, occ, mtot = cl.free_mem[n], cl.free_cu[n], cl.occ[n], cl.mem_total[n]
                    for p in cl.by_type[n][t]:
                        if occ[p] and fmem[p] >= mem and fcu[p] >= cu and p != skip:
                            consider(n, t, (p,), 0, (fcu[p] - cu) / CU + (fmem[p] - mem) / mtot[p])
    if shared_only or (best_key is not None and best_key[0] == 0):
        return best  # nothing below opens fewer than zero GPUs
    # Phase 2: empty GPUs on partly used nodes, the node with the fewest empty GPUs that fit per cell.
    for t in tier:
        for ci in indexes:
            buckets = ci.buckets.get(t)
            if not buckets:
                continue
            for f in sorted(buckets):
                if f < g or not buckets[f]:
                    continue
                n = min(buckets[f])
                r = cl.pick_on_node(n, t, g, mem, cu)
                if r is not None:
                    consider(n, t, r[0], r[1], r[2])
                    break
    if best_key is not None:
        return best  # every spot so far is on a partly used node: better than waking an empty one
    # Phase 3: wake an empty node, the smallest that fits per cell.
    for t in tier:
        for ci in indexes:
            empty = ci.empty.get(t)
            if not empty:
                continue
            fits = [(len(cl.gtype[n]), n) for n in empty if len(cl.by_type[n][t]) >= g]
            if fits:
                n = min(fits)[1]
                r = cl.pick_on_node(n, t, g, mem, cu)
                if r is not None:
                    consider(n, t, r[0], r[1], r[2])
    return best
