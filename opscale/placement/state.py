"""Mutable working state of one ``place`` call: free capacity per GPU and the indexes over it.

Nothing here escapes ``place``: it builds a ``Cluster`` from the frozen input, mutates it while it plans,
and answers frozen values. Nodes, GPUs and topology paths are interned to small ints so that the hot loops
compare ints, not strings.

Indexes (why each exists):

* per node and GPU position: free memory, free compute (in ``CU`` units), occupant count — the truth;
* per *cell* (a rack, i.e. the S0 path; or the NVLink domain when groups are pinned to NVLink domains),
  built lazily on first use, for each GPU type: ``buckets[f]`` = partly used nodes with ``f`` empty GPUs
  of that type (best fit for whole GPUs is the smallest ``f >= g``), ``empty`` = nodes with no occupant at
  all (opening one costs a node's idle power), ``partial`` = occupied GPUs with room left (co-location).
  A full placement only ever builds the cells of the domains it touches; an incremental one a handful;
* per (domain, GPU type): empty GPUs and the free compute left on occupied GPUs, built on first use
  (only a new deployment group needs it) and maintained on every change after that, so choosing a domain
  for a new group costs O(domains), not O(GPUs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opscale.model.memory import usable_bytes
from opscale.placement.types import LEVELS, NodeInfo

CU = 1_000_000  # compute units per GPU: integer arithmetic, so "sum of fractions <= 1.0" is exact


def compute_units(fraction: float) -> int:
    return max(1, min(CU, round(fraction * CU)))


class CellIndex:
    __slots__ = ("buckets", "empty", "partial")

    def __init__(self) -> None:
        self.buckets: dict[str, dict[int, set[int]]] = {}
        self.empty: dict[str, set[int]] = {}
        self.partial: dict[str, set[tuple[int, int]]] = {}


class Cluster:
    def __init__(self, nodes: Sequence[NodeInfo], domain_level: str) -> None:
        self.names: list[str] = [n.name for n in nodes]
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.sched: list[bool] = [n.schedulable for n in nodes]
        self.gtype: list[list[str]] = []
        self.mem_total: list[list[int]] = []
        self.free_mem: list[list[int]] = []
        self.free_cu: list[list[int]] = []
        self.occ: list[list[int]] = []
        self.pos: list[dict[int, int]] = []  # GPU index (CUDA) -> position in the node's lists
        self.gidx: list[list[int]] = []
        self.by_type: list[dict[str, list[int]]] = []
        self.level_ids: list[tuple[int, ...]] = []  # interned topology path per LEVELS entry
        self.cell: list[int] = []
        self.domain: list[int] = []
        self.paths: list[tuple[str, ...]] = []
        intern: dict[tuple[str, ...], int] = {}
        dom_level = LEVELS.index(domain_level)
        cell_level = max(dom_level, LEVELS.index("s0"))
        for node in nodes:
            gpus = node.gpus
            gidx = [g.index for g in gpus]
            if gidx != sorted(gidx):
                gpus = tuple(sorted(gpus, key=lambda g: g.index))
                gidx = [g.index for g in gpus]
            gtype = [g.gpu_type for g in gpus]
            mem = [usable_bytes(g.memory_bytes) for g in gpus]  # the one memory model's usable share
            self.gtype.append(gtype)
            self.mem_total.append(mem)
            self.free_mem.append(list(mem))
            self.free_cu.append([CU] * len(gpus))
            self.occ.append([0] * len(gpus))
            self.gidx.append(gidx)
            self.pos.append(dict(zip(gidx, range(len(gidx)), strict=True)))
            types: dict[str, list[int]] = {}
            for p, t in enumerate(gtype):
                if t in types:
                    types[t].append(p)
                else:
                    types[t] = [p]
            self.by_type.append(types)
            topo = node.topology
            labels = (
                topo.zone,
                topo.s2,
                topo.s1,
                topo.s0,
                topo.nvlink_domain or "\0" + node.name,
            )  # no NVLink label: the node is its own domain
            ids = []
            for depth in range(1, 6):
                path = labels[:depth]
                pid = intern.get(path)
                if pid is None:
                    pid = intern[path] = len(self.paths)
                    self.paths.append(path)
                ids.append(pid)
            self.level_ids.append(tuple(ids))
            self.domain.append(ids[dom_level])
            self.cell.append(ids[cell_level])
        self.used: list[int] = [0] * len(nodes)  # occupied GPUs per node
        self.cell_nodes: dict[int, list[int]] = {}
        self.domain_cells: dict[int, list[int]] = {}
        for n, c in enumerate(self.cell):
            if c in self.cell_nodes:
                self.cell_nodes[c].append(n)
            else:
                self.cell_nodes[c] = [n]
                self.domain_cells.setdefault(self.domain[n], []).append(c)
        self.all_cells: list[int] = list(self.cell_nodes)
        self._cells: dict[int, CellIndex] = {}
        self._dom_free: dict[tuple[int, str], list[int]] | None = None

    def path_name(self, pid: int) -> str:
        return "/".join(x or "-" for x in self.paths[pid])

    @property
    def dom_free(self) -> dict[tuple[int, str], list[int]]:
        """(domain, type) -> [empty GPUs, free CU on occupied GPUs], schedulable nodes only. Built on first
        use (only new deployment groups need it), kept up to date by every change after that."""
        if self._dom_free is None:
            free: dict[tuple[int, str], list[int]] = {}
            for n, types in enumerate(self.by_type):
                if self.sched[n]:
                    oc, fc = self.occ[n], self.free_cu[n]
                    for t, ps in types.items():
                        entry = free.setdefault((self.domain[n], t), [0, 0])
                        for p in ps:
                            if oc[p]:
                                entry[1] += max(fc[p], 0)
                            else:
                                entry[0] += 1
            self._dom_free = free
        return self._dom_free

    def occupy_fresh(self, n: int, positions: Sequence[int], mem: int, cu: int) -> None:
        """``occupy`` for the initial accounting, before any index exists: the plain arithmetic."""
        fm, fc, oc = self.free_mem[n], self.free_cu[n], self.occ[n]
        for p in positions:
            fm[p] -= mem
            fc[p] -= cu
            if not oc[p]:
                self.used[n] += 1
            oc[p] += 1

    # ---- capacity changes -------------------------------------------------------------------------

    def occupy(self, n: int, positions: Iterable[int], mem: int, cu: int) -> None:
        self._change(n, positions, -mem, -cu, 1)

    def release(self, n: int, positions: Iterable[int], mem: int, cu: int) -> None:
        self._change(n, positions, mem, cu, -1)

    def _change(self, n: int, positions: Iterable[int], dmem: int, dcu: int, docc: int) -> None:
        cell = self._cells.get(self.cell[n])
        if cell is not None:
            self._unindex(cell, n)
        fm, fc, oc, gt = self.free_mem[n], self.free_cu[n], self.occ[n], self.gtype[n]
        dom_free = self._dom_free if self.sched[n] else None
        for p in positions:
            if dom_free is not None:
                df = dom_free[(self.domain[n], gt[p])]
                if oc[p]:
                    df[1] -= max(fc[p], 0)
                else:
                    df[0] -= 1
            was = oc[p]
            fm[p] += dmem
            fc[p] += dcu
            oc[p] += docc
            if was == 0 and oc[p] > 0:
                self.used[n] += 1
            elif was > 0 and oc[p] == 0:
                self.used[n] -= 1
            if dom_free is not None:
                if oc[p]:
                    df[1] += max(fc[p], 0)
                else:
                    df[0] += 1
        if cell is not None:
            self._index(cell, n)

    # ---- cell indexes -----------------------------------------------------------------------------

    def cell_index(self, c: int) -> CellIndex:
        cell = self._cells.get(c)
        if cell is None:
            cell = self._cells[c] = CellIndex()
            for n in self.cell_nodes[c]:
                self._index(cell, n)
        return cell

    def _entries(self, n: int) -> Iterable[tuple[str, int, list[tuple[int, int]]]]:
        fm, fc, oc = self.free_mem[n], self.free_cu[n], self.occ[n]
        for t, ps in self.by_type[n].items():
            empty = sum(1 for p in ps if oc[p] == 0)
            room = [(n, p) for p in ps if oc[p] and fc[p] > 0 and fm[p] > 0]
            yield t, empty, room

    def _index(self, cell: CellIndex, n: int) -> None:
        if not self.sched[n]:
            return
        node_empty = self.used[n] == 0
        for t, empty, room in self._entries(n):
            if node_empty:
                cell.empty.setdefault(t, set()).add(n)
            elif empty:
                cell.buckets.setdefault(t, {}).setdefault(empty, set()).add(n)
            if room:
                cell.partial.setdefault(t, set()).update(room)

    def _unindex(self, cell: CellIndex, n: int) -> None:
        if not self.sched[n]:
            return
        node_empty = self.used[n] == 0
        for t, empty, room in self._entries(n):
            if node_empty:
                cell.empty[t].discard(n)
            elif empty:
                cell.buckets[t][empty].discard(n)
            if room:
                cell.partial[t].difference_update(room)

    # ---- questions ----------------------------------------------------------------------------------

    def pick_on_node(
        self, n: int, t: str, g: int, mem: int, cu: int, exclude: int = -1
    ) -> tuple[tuple[int, ...], int, float] | None:
        """The ``g`` GPUs of type ``t`` on node ``n`` a replica would take: occupied GPUs with room first,
        tightest fit first (they open nothing), then the lowest-numbered empty ones. Returns
        (positions, GPUs opened, leftover slack) or None when the node cannot hold the replica."""
        ps = self.by_type[n].get(t)
        if ps is None or len(ps) < g:
            return None
        fm, fc, oc, mt = self.free_mem[n], self.free_cu[n], self.occ[n], self.mem_total[n]
        shared: list[tuple[float, int]] = []
        empty: list[int] = []
        for p in ps:
            if fm[p] >= mem and fc[p] >= cu and p != exclude:
                if oc[p]:
                    shared.append(((fc[p] - cu) / CU + (fm[p] - mem) / mt[p], p))
                else:
                    empty.append(p)
        if len(shared) + len(empty) < g:
            return None
        shared.sort()
        chosen = [p for _, p in shared[:g]]
        slack = sum(s for s, _ in shared[:g])
        opens = g - len(chosen)
        for p in empty[:opens]:
            chosen.append(p)
            slack += 1.0 - cu / CU + (mt[p] - mem) / mt[p]
        return tuple(sorted(chosen)), opens, slack

    def empty_gpus(self, n: int) -> int:
        return len(self.gtype[n]) - self.used[n]
