"""Which network domain a new deployment group should try first.

An estimate, in GPU-equivalents (empty GPUs + compute left on shared ones, per type, kept up to date in
``Cluster.dom_free``): O(domains x types) per new group. Compute is a hard limit, so "does not fit" is
exact, while "fits" may be wrong (memory, GPUs per node, fragmentation): the planner *tries* domains in
this order and keeps the first where the whole group really fits, or else the one that held the most.

Order: the whole group fits (every pool within its allowed types, and all pools together) > every pool
fits on its preferred type > least capacity left over (best fit: big free domains are kept for big groups
later, HeteroScale's "spend high-affinity domains last") or, when nothing fits, most capacity > name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opscale.placement.state import CU, Cluster, compute_units
from opscale.placement.types import PoolDemand

#: Domains actually tried per new group before settling for the one that placed the most. Bounds the
#: cost of a group that fits nowhere on a cluster with many domains.
MAX_TRIALS = 8


def domain_capacity(cl: Cluster, dom: int, types: Sequence[str]) -> float:
    """GPU-equivalents free in a domain for the given types: empty GPUs + compute left on shared ones."""
    total = 0.0
    for t in types:
        free = cl.dom_free.get((dom, t))
        if free is not None:
            total += free[0] + free[1] / CU
    return total


def domain_order(
    cl: Cluster,
    pools: Sequence[PoolDemand],
    running: Mapping[tuple[str, str, str], int],
    all_types: Sequence[str],
) -> list[tuple[int, bool]]:
    """Candidate domains (schedulable nodes only), best first, each with whether the estimate fits."""
    doms = {cl.domain[n] for n in range(len(cl.names)) if cl.sched[n]}
    keyed = []
    for dom in doms:
        need = 0.0
        fits = True
        by_pref: dict[str, float] = {}
        allowed: set[str] = set()
        for d in pools:
            # in the compute units placement itself counts, so "does not fit" stays exact
            share = compute_units(d.compute_fraction) / CU
            amount = max(0, d.replicas - running.get(d.pool, 0)) * d.gpus_per_replica * share
            types = d.gpu_types or tuple(all_types)
            fits = fits and amount <= domain_capacity(cl, dom, types) + 1e-9
            need += amount
            by_pref[types[0] if d.gpu_types else ""] = (
                by_pref.get(types[0] if d.gpu_types else "", 0.0) + amount
            )
            allowed.update(types)
        cap = domain_capacity(cl, dom, sorted(allowed))
        fits = fits and need <= cap + 1e-9
        pref_ok = all(
            v <= domain_capacity(cl, dom, [t] if t else all_types) + 1e-9 for t, v in by_pref.items()
        )
        keyed.append(((not fits, not pref_ok, (cap - need) if fits else -cap, cl.path_name(dom)), dom, fits))
    keyed.sort()
    return [(dom, fits) for _, dom, fits in keyed]
