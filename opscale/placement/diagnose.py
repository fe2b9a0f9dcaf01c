"""Why a pool could not get all its replicas: the first thing that was short, in words an SRE can act on.

Runs only for a pool that came up short, over the nodes of its scope, so it may be O(GPUs in scope).
"""

from __future__ import annotations

from collections.abc import Sequence

from opscale.placement.state import Cluster
from opscale.placement.types import PoolDemand


def _types(d: PoolDemand) -> str:
    return "/".join(d.gpu_types) if d.gpu_types else "any type"


def shortfall(cl: Cluster, d: PoolDemand, cells: Sequence[int], scope: str) -> str:
    allowed = set(d.gpu_types)
    nodes = [n for c in cells for n in cl.cell_nodes[c] if cl.sched[n]]
    best_count = 0
    best_mem = 0
    empty = 0
    room = 0
    for n in nodes:
        for t, ps in cl.by_type[n].items():
            if allowed and t not in allowed:
                continue
            best_count = max(best_count, len(ps))
            best_mem = max(best_mem, *(cl.mem_total[n][p] for p in ps))
            empty += sum(1 for p in ps if cl.occ[n][p] == 0)
            room += sum(1 for p in ps if cl.occ[n][p] and cl.free_cu[n][p] > 0)
    cu = d.compute_fraction
    if best_count == 0:
        return f"no schedulable GPUs of {_types(d)} in {scope}"
    if best_count < d.gpus_per_replica:
        return (
            f"GPUs per node: a replica needs {d.gpus_per_replica} GPUs of one type ({_types(d)}) on "
            f"one node; the most any schedulable node in {scope} has is {best_count}"
        )
    if best_mem < d.memory_bytes_per_gpu:
        return (
            f"GPU memory: a replica needs {d.memory_bytes_per_gpu} bytes per GPU; the largest "
            f"{_types(d)} GPU in {scope} has {best_mem} usable"
        )
    left = f"{empty} empty GPUs and {room} shared ones with some compute left"
    if empty >= d.gpus_per_replica > 1:
        left += f", but no node has {d.gpus_per_replica} that fit together"
    return (
        f"capacity: {scope} has no room left for {d.gpus_per_replica} GPU(s) of {_types(d)} with "
        f"{d.memory_bytes_per_gpu} bytes and {cu:g} compute each ({left})"
    )
