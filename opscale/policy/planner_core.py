"""Search primitives the ``operator`` and ``model`` planners share: units, pool options, the exact
fewest-GPU combination of one option per pool, and power.

A *unit* is what one replica of a pool runs: one operator of a stage (``operator`` policy) or the whole
stage of the model (``model`` policy). A pool's *frontier* is its Pareto set of (GPUs, latency
contribution) options — how each stage builds it is in ``planner_prefill`` (queues of prompts) and
``planner_decode`` (continuous batching of resident sequences). The stage then needs one option per
pool with Σ contribution ≤ the budget at the fewest Σ GPUs: a multiple-choice knapsack. The paper's greedy
— add the replica with the best latency gain per GPU — is the convex-hull heuristic for it
(``solve_stage_greedy``, kept for comparison). It overshoots: over 72 (model, load, SLO) cases it needed
one GPU more than the optimum in 12, and more load could yield fewer GPUs. The frontiers are short (tens
of points), so ``solve_stage`` solves it exactly: merge frontiers pairwise into the Pareto frontier of
sums (pruning partial sums that cannot meet the budget even with every remaining pool at its fastest),
and binary-search the last pool.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from opscale.model import PerfModel
from opscale.model.energy import OperatorLoad, gpu_watts
from opscale.model.fabric import HOP_LATENCY_S, same_node_share, seconds_per_byte
from opscale.model.memory import ReplicaMemory, replica_memory
from opscale.model.sharing import SHARES
from opscale.policy.types import Infeasibility, InfeasibilityKind, Limits, PoolKey

MAX_NODE_GPUS = 8  # tensor parallelism stays inside one NVLink node


@dataclass(frozen=True, slots=True)
class Unit:
    """What one replica of a pool runs: ``ops`` of ``stage`` (one operator, or the whole stage)."""

    pool: PoolKey
    stage: str
    ops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Option:
    """One pool configuration: ``replicas`` × ``gpus`` at ``batch``, with its predicted times (ms).

    ``latency_ms`` is the pool's contribution to the stage's latency that the search adds up
    (``wait_ms`` + ``pass_ms``); ``rho`` the replicas' busy fraction. ``cost`` (GPUs) and ``latency_ms``
    are stored, not derived: the search reads them millions of times. Build with ``option``."""

    batch: int
    gpus: float  # GPUs per replica; below 1, a share of one GPU (opscale.model.sharing)
    replicas: int
    pass_ms: float
    wait_ms: float
    rho: float
    cost: float  # GPUs: replicas × gpus
    latency_ms: float


def option(batch: int, gpus: float, replicas: int, pass_ms: float, wait_ms: float, rho: float) -> Option:
    return Option(batch, gpus, replicas, pass_ms, wait_ms, rho, replicas * gpus, wait_ms + pass_ms)


@dataclass(frozen=True, slots=True)
class Shape:
    """A pool's replica shape: GPUs per replica (a share below 1), pass size, decode micro-batches."""

    gpus: float
    batch: int
    micro: int = 1


def batch_candidates(max_batch: int) -> tuple[int, ...]:
    out = [1 << k for k in range(max_batch.bit_length()) if 1 << k <= max_batch]
    if out[-1] != max_batch:
        out.append(max_batch)
    return tuple(out)


def gpu_choices(least: int | None, most: int = MAX_NODE_GPUS) -> tuple[int, ...]:
    """Powers of two from ``least`` (itself a power of two, or None: nothing fits) up to ``most``."""
    if least is None:
        return ()
    g = 1 << max(0, least - 1).bit_length()
    out = []
    while g <= most:
        out.append(g)
        g *= 2
    return tuple(out)


def replica_sizes(
    perf: PerfModel, unit: Unit, batch: int, kv_tokens: float = 0.0, most: int = MAX_NODE_GPUS
) -> tuple[float, ...]:
    """GPUs per replica worth trying: for an operator pool the shares of one GPU
    (``opscale.model.sharing.SHARES``), and the powers of two from the fewest that fit the memory model
    and, for a replica that holds KV, hold ``kv_tokens`` — up to ``most`` (or the fewest that fit). A
    whole-model replica takes whole GPUs, as model-level serving does."""

    def fits(g: float) -> bool:
        m = memory(perf, unit, batch, g)
        return m.fits and (not m.holder or m.kv_tokens() >= kv_tokens)

    shares = tuple(s for s in SHARES if fits(s)) if len(unit.ops) == 1 else ()
    g = 1
    while g <= 64 and not fits(g):
        g *= 2
    return shares + gpu_choices(g if g <= 64 else None, most=max(most, g))


@lru_cache(maxsize=1 << 18)
def pass_ms(
    perf: PerfModel, unit: Unit, batch: int, length: int, gpus: float, core: int | None = None
) -> float:
    """One pass of the unit: the sum of its operators' passes (memoised: the searches ask again and again)."""
    return sum(perf.pass_latency_ms(unit.stage, op, batch, length, gpus, core) for op in unit.ops)


def memory(perf: PerfModel, unit: Unit, batch: int, gpus: float) -> ReplicaMemory:
    """The replica's memory under the one memory model (``opscale.model.memory``)."""
    return replica_memory(perf.shape, perf.gpu, unit.stage, unit.ops, batch, gpus)


EPSILON = 0.003  # a frontier point must be at least 0.3% faster than the cheaper one it follows


def pareto(points: list[Option]) -> list[Option]:
    """Cheapest first, each faster than every cheaper one by more than ``EPSILON`` (relative): points that
    buy a hair of latency with more GPUs only lengthen the knapsack's merge (ε-Pareto)."""
    points.sort(key=lambda o: (o.cost, o.latency_ms))
    out: list[Option] = []
    for o in points:
        if not out or o.latency_ms < out[-1].latency_ms * (1.0 - EPSILON):
            out.append(o)
    return out


def solve_stage(frontiers: Sequence[list[Option]], budget_ms: float) -> list[Option] | None:
    """One option per pool with Σ latency ≤ budget at the fewest Σ GPUs (ties: least latency); exact."""
    if not frontiers or any(not f for f in frontiers):
        return None
    order = sorted(range(len(frontiers)), key=lambda i: len(frontiers[i]))
    fastest = [frontiers[i][-1].latency_ms for i in order]
    rest = [sum(fastest[k + 1 :]) for k in range(len(order))]
    partial: list[tuple[float, float, tuple[Option, ...]]] = [(0.0, 0.0, ())]
    for k, i in enumerate(order[:-1]):
        merged = [
            (c + o.cost, lat + o.latency_ms, (*ch, o))
            for c, lat, ch in partial
            for o in frontiers[i]
            if lat + o.latency_ms + rest[k] <= budget_ms
        ]
        merged.sort(key=lambda t: (t[0], t[1]))
        partial = []
        for t in merged:
            if not partial or t[1] < partial[-1][1]:
                partial.append(t)
    last = frontiers[order[-1]]
    neg_lat = [-o.latency_ms for o in last]  # ascending, as the frontier's latency falls with cost
    best: tuple[float, float, tuple[Option, ...]] | None = None
    for c, lat, ch in partial:
        j = bisect.bisect_left(neg_lat, -(budget_ms - lat))
        if j < len(last):
            o = last[j]
            cand = (c + o.cost, lat + o.latency_ms, (*ch, o))
            if best is None or cand[:2] < best[:2]:
                best = cand
    if best is None:
        return None
    chosen = dict(zip(order, best[2], strict=True))
    return [chosen[i] for i in range(len(frontiers))]


def solve_stage_greedy(frontiers: Sequence[list[Option]], budget_ms: float) -> list[Option] | None:
    """The paper's greedy, for comparison: start every pool at its cheapest point (the throughput
    minimum) and, while Σ latency is over budget, take the move along one pool's frontier with the best
    latency gain per GPU added. Never cheaper than ``solve_stage``; sometimes dearer."""
    if not frontiers or any(not f for f in frontiers):
        return None
    idx = [0] * len(frontiers)
    lat = sum(f[0].latency_ms for f in frontiers)
    while lat > budget_ms:
        best: tuple[float, int, int] | None = None
        for i, f in enumerate(frontiers):
            cur = f[idx[i]]
            for j in range(idx[i] + 1, len(f)):
                gain = (cur.latency_ms - f[j].latency_ms) / (f[j].cost - cur.cost)
                if best is None or gain > best[0]:
                    best = (gain, i, j)
        if best is None:
            return None
        _, i, j = best
        lat += frontiers[i][j].latency_ms - frontiers[i][idx[i]].latency_ms
        idx[i] = j
    return [f[k] for f, k in zip(frontiers, idx, strict=True)]


def option_watts(perf: PerfModel, unit: Unit, opt: Option, length: int) -> float:
    """Pool power: each GPU at idle plus, per operator of the unit, its busy power above idle weighted
    by its share of the time (ρ × its share of the pass)."""
    loads = []
    times = [perf.pass_latency_ms(unit.stage, op, opt.batch, length, opt.gpus) for op in unit.ops]
    total = sum(times) or 1.0
    for op, t in zip(unit.ops, times, strict=True):
        loads.append(
            OperatorLoad(perf.busy_watts(unit.stage, op, opt.batch, length), min(1.0, opt.rho * t / total))
        )
    return opt.cost * gpu_watts(perf.gpu, loads)


def gpus_text(gpus: float) -> str:
    return f"{gpus:g} GPUs" if gpus >= 1 else f"{gpus:g} of a GPU"


def describe(pool: PoolKey, opt: Option, percentile: float) -> str:
    if pool.stage == "decode":
        return (
            f"{pool}: {opt.replicas} replicas × {gpus_text(opt.gpus)}, passes of up to {opt.batch} "
            f"sequences: busy {opt.rho:.2f}, {opt.pass_ms:.1f} ms of each token round."
        )
    return (
        f"{pool}: {opt.replicas} replicas × {gpus_text(opt.gpus)}: ρ={opt.rho:.2f}, wait p{percentile:g} "
        f"{opt.wait_ms:.1f} ms, pass {opt.pass_ms:.1f} ms."
    )


def stage_totals(chosen: Mapping[PoolKey, Option]) -> tuple[float, float]:
    return sum(o.latency_ms for o in chosen.values()), sum(o.cost for o in chosen.values())


@dataclass(frozen=True, slots=True)
class StagePlan:
    stage: str
    chosen: dict[PoolKey, Option]
    latency_ms: float
    budget_ms: float
    met: bool
    infeasible: list[Infeasibility] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    micro: int = 1  # decode: micro-batches per pass (ping-pong between the stage's pools)
    kv_tokens: float = 0.0  # decode: the resident KV (tokens) its holder pool is sized for, at the quantile

    @property
    def gpus(self) -> float:
        return sum(o.cost for o in self.chosen.values())

    @property
    def whole_gpus(self) -> int:
        """GPUs the stage takes on its own: replicas of whole GPUs, and its shared replicas packed onto
        ⌈Σ shares⌉ GPUs (``plan_gpus``'s count). What a form costs when it is compared with the other:
        a fraction saved on paper is only a GPU saved when it empties one."""
        whole = sum(o.cost for o in self.chosen.values() if o.gpus >= 1.0)
        shared = sum(o.cost for o in self.chosen.values() if o.gpus < 1.0)
        return round(whole) + math.ceil(shared - 1e-9)


def stage_bounds(limits: Limits, floors: Mapping[PoolKey, int], u: Unit) -> tuple[int, int | None]:
    lim = limits.for_pool(u.pool)
    return max(1, lim.min_replicas, floors.get(u.pool, 0)), lim.max_replicas


def slo_miss(stage: str, label: str, latency: float, budget: float) -> Infeasibility:
    shown = f"{latency:.1f} ms" if math.isfinite(latency) else "unbounded (the pools cannot keep up)"
    return Infeasibility(
        InfeasibilityKind.SLO_UNREACHABLE,
        f"{stage}: the fastest {label} reachable within the replica limits is {shown}, over the "
        f"{budget:g} ms SLO; planning the fastest configuration.",
    )


def hop_model(perf: PerfModel, units: Sequence[Unit], same_node: float = 1.0) -> Callable[[int], float]:
    """Activation hand-offs per pass of a stage's operator pools (none for a whole-model replica):
    2 per layer (attention → FFN → attention) plus embedding → attention and FFN → lm_head, each a fixed
    latency plus the tokens' residual stream over NVLink for the ``same_node`` share of attention↔FFN
    replica pairs, and over the network for the rest (``opscale.model.fabric``, ``node_share``)."""
    if len(units) <= 1:
        return lambda tokens: 0.0
    hops = 2 * perf.shape.layers + 2
    per_byte = seconds_per_byte(perf.gpu.link_bytes_s, same_node)
    per_token_ms = perf.shape.activation_bytes_per_token * per_byte * 1e3
    fixed = HOP_LATENCY_S * 1e3
    return lambda tokens: hops * (fixed + tokens * per_token_ms)


def node_share(units: Sequence[Unit], chosen: Mapping[PoolKey, Option]) -> float:
    """The share of a stage's attention↔FFN replica pairs placement can keep on one node, for the chosen
    options (``fabric.same_node_share``: the stage's size, and the room the replicas' sizes leave)."""
    att = [chosen[u.pool] for u in units if "attention" in u.ops and u.pool in chosen]
    mid = [chosen[u.pool] for u in units if {"ffn", "experts"} & set(u.ops) and u.pool in chosen]
    stage_gpus = sum(o.cost for o in chosen.values())
    if len(att) != 1 or len(mid) != 1:  # a whole-model replica hands nothing off
        return same_node_share(stage_gpus)
    (a,), (f,) = att, mid
    return same_node_share(stage_gpus, ((a.gpus, a.replicas), (f.gpus, f.replicas)))
