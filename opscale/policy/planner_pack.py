"""An estimate of the operator plan's GPUs once placement co-locates its tiny replicas.

The planners count whole GPUs: every replica holds at least one. An operator plan's embedding and
lm_head replicas are tiny (a 2.1 GB vocabulary matrix for llama3-70b, busy a few percent of the time),
and OpScale's placement puts such replicas on GPUs that already hold others ("best fit that opens a new
GPU only when no existing one fits"). Placement (``opscale/placement``) owns the real answer; this
estimate says what it can save, for the what-if.

Rule: a replica is *tiny* if it runs on one GPU and is busy at most ``TINY_BUSY`` (5%) of the time.
Largest first, each tiny replica goes on the first GPU of the plan with room: memory used + its memory
within the usable share of the GPU, and at most ``TINY_BUSY`` of guest work per GPU in total, so a host
pool's queueing changes by at most that share (the guest's pass can delay a host pass by at most its
own pass time, under 1 ms for these operators; the estimate does not re-price that). A tiny replica that
finds no room keeps its own GPU, which later tiny replicas may share.
"""

from __future__ import annotations

from opscale.model import PerfModel
from opscale.policy.planner_core import replica_bytes, usable_bytes
from opscale.policy.planner_stage import Plan

TINY_BUSY = 0.05


def packed_gpus(perf: PerfModel, plan: Plan) -> tuple[int, str]:
    """(GPUs after co-locating tiny replicas, a sentence saying what moved)."""
    cap = usable_bytes(perf)
    hosts: list[list[float]] = []  # per GPU: [bytes used, guest busy fraction]
    tiny: list[tuple[float, float, str]] = []  # bytes, busy, pool
    for sp in plan.stages:
        ctx = plan.works[sp.stage].context
        for pool, opt in sp.chosen.items():
            per_gpu = replica_bytes(perf, plan.units[pool], opt.batch, ctx) / opt.gpus
            if opt.gpus == 1 and opt.rho <= TINY_BUSY:
                tiny.extend((per_gpu, opt.rho, str(pool)) for _ in range(opt.replicas))
            else:
                hosts.extend([per_gpu, 0.0] for _ in range(opt.cost))
    whole = len(hosts) + len(tiny)
    moved: dict[str, int] = {}
    for size, busy, name in sorted(tiny, reverse=True):
        for gpu in hosts:
            if gpu[0] + size <= cap and gpu[1] + busy <= TINY_BUSY:
                gpu[0] += size
                gpu[1] += busy
                moved[name] = moved.get(name, 0) + 1
                break
        else:
            hosts.append([size, busy])
    n = sum(moved.values())
    if not n:
        return whole, (
            f"Packing estimate: no tiny replica (1 GPU, busy ≤ {TINY_BUSY:.0%}) fits beside "
            f"another: {whole} GPUs."
        )
    what = ", ".join(f"{k} ×{v}" for k, v in sorted(moved.items()))
    return whole - n, (
        f"Packing estimate: placement can co-locate {n} tiny replicas ({what}; 1 GPU, busy "
        f"≤ {TINY_BUSY:.0%}) in spare memory of other GPUs: {whole} → {whole - n} GPUs."
    )
