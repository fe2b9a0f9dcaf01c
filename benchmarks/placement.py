"""Benchmark of the pure placement (BENCHMARKS.md, "Placement").

Cluster: 1,250 nodes x 8 GPUs = 10,000 GPUs; 60% of nodes H100 (80 GiB), 40% H200 (141 GiB), interleaved
by rack; 4 zones x 2 S2 x 4 S1 = 32 S1 domains, racks of 10 nodes (~4 per S1). Workload: 50 P/D
deployments (one deployment group each, pinned to an S1 domain), 6 operator pools each (prefill
attention / FFN, decode attention / FFN, embedding, LM head) with varied GPUs per replica, memory,
compute share, preferred type and bytes exchanged per token; 5,000 replicas in all.

Scenarios:
  full         5,000 replicas onto the empty cluster.
  incr-5dep    on the cluster holding the full placement, 5 deployments change by 50 replicas in all
               (+30 / -20); only those 5 deployments' demands are passed.
  incr-all     the same 50-replica change, but the demands of all 50 deployments are passed (what a
               placement service that reconciles everything each tick would do).

  ungrouped    (--variants) the full placement with no deployment groups: every pool may use any of
               the 125 racks, the widest search.
  zone         (--variants) groups pinned per zone instead of per S1 domain.
  overfull     (--variants) 3x the demand (15,000 replicas): groups fit nowhere whole, so each new
               group is tried in up to MAX_TRIALS domains; the rest is reported infeasible.

    .venv/bin/python benchmarks/placement.py [--quick] [--no-gc] [--variants]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable

from opscale.placement import (
    GpuSlot,
    NodeInfo,
    PlacedReplica,
    PlacementInput,
    PlacementOutput,
    PoolDemand,
    Topology,
    place,
)

GIB = 2**30
NODES, GPUS, RACK = 1250, 8, 10
ZONES, S2, S1 = 4, 2, 4


def cluster() -> tuple[NodeInfo, ...]:
    domains = ZONES * S2 * S1
    per_domain = -(-NODES // domains)
    nodes = []
    for i in range(NODES):
        d, k = divmod(i, per_domain)
        zone, rest = divmod(d, S2 * S1)
        s2, s1 = divmod(rest, S1)
        rack = k // RACK
        h200 = (i // RACK) % 5 >= 3  # 2 racks in 5 are H200
        kind, mem = ("H200", 141 * GIB) if h200 else ("H100", 80 * GIB)
        topo = Topology(
            f"z{zone}",
            f"z{zone}-s2-{s2}",
            f"z{zone}-s2-{s2}-s1-{s1}",
            f"z{zone}-s2-{s2}-s1-{s1}-r{rack}",
            nvlink_domain="",
        )
        nodes.append(NodeInfo(f"node-{i:04d}", tuple(GpuSlot(j, kind, mem) for j in range(GPUS)), topo))
    return tuple(nodes)


# stage, operator, share of the deployment's replicas, GPUs/replica, GiB/GPU, compute share, types
POOLS = (
    ("prefill", "attention", 0.20, 1, 20, 0.5, ("H100", "H200")),
    ("prefill", "ffn", 0.15, 2, 60, 1.0, ("H100", "H200")),
    ("decode", "attention", 0.25, 1, 40, 0.5, ("H200", "H100")),
    ("decode", "ffn", 0.20, 1, 50, 0.75, ("H200", "H100")),
    ("serve", "embedding", 0.10, 1, 4, 0.25, ()),
    ("serve", "lm_head", 0.10, 1, 8, 0.25, ()),
)
EXCHANGE = {  # bytes per token between pools of one deployment
    (("prefill", "attention"), ("prefill", "ffn")): 16_384.0,
    (("decode", "attention"), ("decode", "ffn")): 16_384.0,
    (("prefill", "attention"), ("decode", "attention")): 131_072.0,  # KV cache hand-over
    (("serve", "embedding"), ("prefill", "attention")): 8_192.0,
    (("decode", "ffn"), ("serve", "lm_head")): 8_192.0,
}


def demands(sizes: list[int]) -> tuple[PoolDemand, ...]:
    out = []
    for i, total in enumerate(sizes):
        counts = [int(total * share) for _, _, share, *_ in POOLS]
        counts[0] += total - sum(counts)
        for (stage, op, _, g, gib, cf, types), n in zip(POOLS, counts, strict=True):
            exch = {b: w for (a, b), w in EXCHANGE.items() if a == (stage, op)}
            out.append(
                PoolDemand(
                    f"dep{i:02d}",
                    stage,
                    op,
                    n,
                    g,
                    gib * GIB,
                    cf,
                    types,
                    group=f"dep{i:02d}",
                    exchange_bytes_per_token=exch,
                )
            )
    return tuple(out)


def sizes(rng: random.Random) -> list[int]:
    raw = [rng.randint(40, 160) for _ in range(50)]
    scale = 5000 / sum(raw)
    out = [max(10, round(x * scale)) for x in raw]
    out[0] += 5000 - sum(out)
    return out


def change(base: tuple[PoolDemand, ...], rng: random.Random) -> tuple[tuple[PoolDemand, ...], set[str]]:
    """+30 replicas spread over 3 deployments, -20 over 2: 50 replicas change."""
    deps = rng.sample(sorted({d.deployment for d in base}), 5)
    delta = {deps[0]: 10, deps[1]: 10, deps[2]: 10, deps[3]: -10, deps[4]: -10}
    out = []
    for d in base:
        step = delta.get(d.deployment, 0)
        if step and d.operator in ("attention", "ffn"):  # 10 = 3 + 3 + 2 + 2 over the 4 main pools
            share = (3 if d.stage == "prefill" else 2) * (1 if step > 0 else -1)
            d = PoolDemand(
                d.deployment,
                d.stage,
                d.operator,
                max(0, d.replicas + share),
                d.gpus_per_replica,
                d.memory_bytes_per_gpu,
                d.compute_fraction,
                d.gpu_types,
                d.group,
                d.exchange_bytes_per_token,
            )
        out.append(d)
    return tuple(out), set(deps)


Times = tuple[list[float], list[float]]


NO_GC = False


def timed(fn: Callable[[], PlacementOutput], runs: int) -> tuple[Times, PlacementOutput]:
    """Wall time and this process's CPU time per run: on a shared machine the CPU time is the steadier.
    With ``--no-gc`` the cyclic garbage collector is off while a run is timed (and a collection runs
    between runs), which separates the algorithm from gen-2 collections over the caller's heap."""
    wall: list[float] = []
    cpu: list[float] = []
    out = None
    for _ in range(runs):
        if NO_GC:
            gc.collect()
            gc.disable()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        gc.enable()
    assert out is not None
    return (wall, cpu), out


def _p99(xs: list[float]) -> float:
    ts = sorted(xs)
    return ts[min(len(ts) - 1, round(0.99 * (len(ts) - 1)))]


def summary(name: str, times: Times, out: PlacementOutput) -> str:
    wall, cpu = times
    short = sum(i.requested - i.placed for i in out.infeasible)
    return (
        f"{name:10s} runs={len(wall):3d}  wall median {statistics.median(wall) * 1e3:7.1f} ms "
        f"p99 {_p99(wall) * 1e3:7.1f} ms  cpu median {statistics.median(cpu) * 1e3:7.1f} ms "
        f"p99 {_p99(cpu) * 1e3:7.1f} ms  start={len(out.start)} stop={len(out.stop)} "
        f"keep={len(out.keep)} short={short}"
    )


def check(nodes: tuple[NodeInfo, ...], replicas: tuple[PlacedReplica, ...]) -> None:
    mem = {(n.name, g.index): g.memory_bytes for n in nodes for g in n.gpus}
    used: dict[tuple[str, int], list[float]] = {}
    for r in replicas:
        for i in r.gpu_indices:
            u = used.setdefault((r.node, i), [0, 0.0])
            u[0] += r.memory_bytes_per_gpu
            u[1] += r.compute_fraction
    bad = [k for k, (m, c) in used.items() if m > mem[k] or c > 1.0 + 1e-9]
    assert not bad, f"over capacity: {bad[:5]}"


def packing(
    nodes: tuple[NodeInfo, ...], ds: tuple[PoolDemand, ...], running: tuple[PlacedReplica, ...]
) -> str:
    """How tight the plan is: GPUs and nodes in use against the compute lower bound, and groups per
    S1 domain (1 = every P/D group stayed inside one domain)."""
    gpus = {(r.node, i) for r in running for i in r.gpu_indices}
    used_nodes = {r.node for r in running}
    bound = sum(d.replicas * d.gpus_per_replica * d.compute_fraction for d in ds)
    s1 = {n.name: n.topology.s1 for n in nodes}
    domains: dict[str, set[str]] = {}
    for r in running:
        domains.setdefault(r.deployment, set()).add(s1[r.node])
    worst = max(len(v) for v in domains.values())
    return (
        f"packing: {len(gpus)} GPUs in use (compute lower bound {bound:.0f}), {len(used_nodes)} of "
        f"{len(nodes)} nodes in use; most S1 domains spanned by one group: {worst}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs (3 full, 10 incremental)")
    ap.add_argument(
        "--variants",
        action="store_true",
        help="also: full placement with no groups, with groups pinned per zone, and at 3x the demand",
    )
    ap.add_argument("--no-gc", action="store_true", help="garbage collector off while a run is timed")
    args = ap.parse_args()
    global NO_GC
    NO_GC = args.no_gc
    full_runs, incr_runs = (3, 10) if args.quick else (9, 50)
    rng = random.Random(20261122)
    nodes = cluster()
    base = demands(sizes(rng))
    print(
        f"cluster: {len(nodes)} nodes, {NODES * GPUS} GPUs, gc {'off' if NO_GC else 'on'}; "
        f"{sum(d.replicas for d in base)} replicas in {len(base)} pools; python {sys.version.split()[0]}"
    )

    times, full = timed(lambda: place(PlacementInput(nodes, (), base)), full_runs)
    check(nodes, full.start)
    print(summary("full", times, full))
    print(packing(nodes, base, full.start))

    current = full.start
    changed, deps = change(base, rng)
    subset = tuple(d for d in changed if d.deployment in deps)
    times, out = timed(lambda: place(PlacementInput(nodes, current, subset)), incr_runs)
    check(nodes, out.keep + out.start)
    print(summary("incr-5dep", times, out))
    times, out = timed(lambda: place(PlacementInput(nodes, current, changed)), incr_runs)
    check(nodes, out.keep + out.start)
    print(summary("incr-all", times, out))
    if args.variants:
        ungrouped = tuple(dataclasses.replace(d, group="") for d in base)
        times, out = timed(lambda: place(PlacementInput(nodes, (), ungrouped)), 3)
        print(summary("ungrouped", times, out))
        times, out = timed(lambda: place(PlacementInput(nodes, (), base, domain_level="zone")), 3)
        print(summary("zone", times, out))
        overfull = tuple(dataclasses.replace(d, replicas=3 * d.replicas) for d in base)
        times, out = timed(lambda: place(PlacementInput(nodes, (), overfull)), 3)
        check(nodes, out.start)
        print(summary("overfull", times, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
