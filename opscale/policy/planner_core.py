"""The search the ``operator`` and ``model`` planners share: M/M/R pools whose job is one batch pass.

Queueing mapping (one pool = R identical replicas of a *unit*: one operator for the ``operator``
policy, a whole stage of the model for the ``model`` policy). A replica with batch size b runs one
*pass* — b sequences through every operator of the unit, all layers (``PerfModel.pass_latency_ms`` folds
the layers) — in s(b, g) seconds on g GPUs. A job of the M/M/R queue is one such pass:

* prefill: the pool must process λ prompts/s, b prompts per pass, so passes arrive at λ_j = λ / b;
* decode (continuous batching): every live sequence needs one pass per generated token, so the pool
  must run λ·n_out sequence-steps/s; a pass advances b sequences by one token, so λ_j = λ·n_out / b
  (a replica's throughput is b / s(b) tokens/s, as it should be);
* service rate μ = 1 / s(b, g); offered load a = λ_j·s; utilization ρ = a / R; stable iff R > a.

The pool's latency at the SLO quantile p is the M/M/R wait quantile plus the pass,
ℓ = W_p(R, λ_j, μ) + s. This treats each pass as Poisson-arriving and exponentially served; real passes
are near-deterministic, for which the M/M/R wait is conservative (M/D/R waits less). No batch-forming
delay is added: continuous batching launches a partial batch rather than wait for b arrivals, and a
partial batch is no slower than a full one, so s(b) bounds it from above.

Critical path. A request's first token needs one pass through every prefill pool, its every later
token one pass through every decode pool, so TTFT_p ≈ Σ_prefill pools ℓ and TBT_p ≈ Σ_decode pools ℓ.
Summing per-pool quantiles is conservative (the quantile of a sum is at most the sum of quantiles), and
it charges the operator plan one wait per operator where a whole-model replica waits once: the
comparison errs against the operator policy, never for it.

Search. Per pool, every (batch b in powers of two up to ``max_batch_size``, GPUs g = a power of two
from the fewest whose memory holds weights + KV of b sequences + activations, up to one 8-GPU node)
is swept over R from the stability bound ⌊a⌋ + 1 upward, each step one O(1) Erlang-B recursion step,
until the wait quantile reaches 0 (more replicas then buy nothing). The points (GPUs = R·g, ℓ) are cut
to the pool's Pareto frontier; a whole config is skipped when an already-found point is at most as
costly as its cheapest point and at most as slow as its pass (the dominance bound keeps batch 1 of a
busy decode pool, hundreds of replicas, from ever being swept). The stage then needs one point per
pool with Σ ℓ ≤ the SLO at the fewest Σ GPUs: a multiple-choice knapsack. The paper's greedy — add the
replica with the best latency gain per GPU — is the convex-hull heuristic for it (``solve_stage_greedy``,
kept for comparison). It overshoots: over 72 (model, load, SLO) cases of llama3-8b/70b and mixtral-8x7b
it needed one GPU more than the optimum in 12, and more load can yield fewer GPUs (llama3-70b, SLO
500/50 ms: 22 GPUs at 8 req/s, 20 at 8.5; see the tests). The frontiers are short (tens of points),
so we solve it exactly instead: merge frontiers pairwise into the Pareto frontier of sums (pruning
partial sums that cannot meet the SLO even with every remaining pool at its fastest), and
binary-search the last pool.
Exactness gives two guarantees the tests check: no plan with one GPU fewer meets the SLO under this
model, and more load never yields fewer GPUs (a plan feasible at a higher load is feasible at a lower).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from opscale.model import PerfModel
from opscale.model.energy import OperatorLoad, gpu_watts
from opscale.model.perf import USABLE_MEMORY_FRACTION
from opscale.policy.queueing import erlang_b
from opscale.policy.types import PoolKey

MAX_NODE_GPUS = 8  # tensor parallelism stays inside one NVLink node unless memory forces more


@dataclass(frozen=True, slots=True)
class Unit:
    """What one replica of a pool runs: ``ops`` of ``stage`` (one operator, or the whole stage)."""

    pool: PoolKey
    stage: str
    ops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Work:
    """One stage's load: ``seq_steps_per_s`` sequence-passes/s (prefill: prompts/s; decode: tokens/s),
    ``length`` tokens per sequence for latency (prompt, or mean KV length), ``context`` for memory."""

    seq_steps_per_s: float
    length: int
    context: int


@dataclass(frozen=True, slots=True)
class Option:
    """One pool configuration: ``replicas`` × ``gpus`` at ``batch``, with its predicted times (ms).
    ``cost`` (GPUs) and ``latency_ms`` (wait + pass) are stored, not derived: the search reads them
    millions of times. Build with ``option``."""

    batch: int
    gpus: int
    replicas: int
    pass_ms: float
    wait_ms: float
    rho: float
    cost: int
    latency_ms: float


def option(batch: int, gpus: int, replicas: int, pass_ms: float, wait_ms: float, rho: float) -> Option:
    return Option(batch, gpus, replicas, pass_ms, wait_ms, rho, replicas * gpus, wait_ms + pass_ms)


def batch_candidates(max_batch: int) -> tuple[int, ...]:
    out = [1 << k for k in range(max_batch.bit_length()) if 1 << k <= max_batch]
    if out[-1] != max_batch:
        out.append(max_batch)
    return tuple(out)


def pass_ms(perf: PerfModel, unit: Unit, batch: int, length: int, gpus: int) -> float:
    return sum(perf.pass_latency_ms(unit.stage, op, batch, length, gpus) for op in unit.ops)


def replica_bytes(perf: PerfModel, unit: Unit, batch: int, context: int) -> int:
    """Memory of one replica (all its GPUs): weights + KV of every op, plus the largest activation
    working set (the unit's operators run one after another and reuse it)."""
    fixed, act = 0, 0
    for op in unit.ops:
        need = perf.replica_memory_bytes(unit.stage, op, batch, context)
        kv = batch * context * perf.kv_bytes_per_token() if op == "attention" else 0
        fixed += perf.weights_bytes(op) + kv
        act = max(act, need - perf.weights_bytes(op) - kv)
    return fixed + act


def usable_bytes(perf: PerfModel) -> float:
    return perf.gpu.memory_bytes * USABLE_MEMORY_FRACTION


@lru_cache(maxsize=1 << 14)
def min_gpus(perf: PerfModel, unit: Unit, batch: int, context: int) -> int:
    """Fewest GPUs whose usable memory holds one replica (``replica_bytes``)."""
    return max(1, math.ceil(replica_bytes(perf, unit, batch, context) / usable_bytes(perf)))


def gpu_choices(least: int) -> tuple[int, ...]:
    g = 1 << max(0, least - 1).bit_length()  # smallest power of two >= least
    out = [g]
    while out[-1] * 2 <= MAX_NODE_GPUS:
        out.append(out[-1] * 2)
    return tuple(out)


def wait_ms(replicas: int, jobs_per_s: float, service_s: float, q: float) -> float:
    """W_q of M/M/R in ms (``inf`` if unstable); the one-off form of the sweep's recursion."""
    a = jobs_per_s * service_s
    if jobs_per_s == 0.0:
        return 0.0
    if replicas <= a:
        return math.inf
    b = erlang_b(replicas, a)
    c = min(1.0, replicas * b / (replicas - a * (1.0 - b)))
    if c <= 1.0 - q:
        return 0.0
    return 1e3 * math.log(c / (1.0 - q)) / (replicas / service_s - jobs_per_s)


# A point of a sweep, before it becomes an ``Option``: tuples sort natively by (cost, latency).
_Point = tuple[int, float, float, int, int, int, float, float]  # cost, ℓ, wait, R, batch, GPUs, pass, ρ


def _sweep(batch: int, gpus: int, s_ms: float, jobs: float, r0: int, r_max: int, q: float) -> list[_Point]:
    """Points for R = r0, r0+1, … until the wait quantile is 0 or R passes ``r_max``."""
    if jobs == 0.0:
        return [(r0 * gpus, s_ms, 0.0, r0, batch, gpus, s_ms, 0.0)] if r0 <= r_max else []
    s = s_ms / 1e3
    a = jobs * s
    tail, mu = 1.0 - q, 1.0 / s
    r = r0
    b = erlang_b(r, a)
    out: list[_Point] = []
    while r <= r_max:
        c = r * b / (r - a * (1.0 - b))
        if c <= tail:
            out.append((r * gpus, s_ms, 0.0, r, batch, gpus, s_ms, a / r))
            break
        w = 1e3 * math.log(min(1.0, c) / tail) / (r * mu - jobs)
        out.append((r * gpus, w + s_ms, w, r, batch, gpus, s_ms, a / r))
        r += 1
        b = a * b / (r + a * b)
    return out


def pareto(points: list[Option]) -> list[Option]:
    """Cheapest first, each strictly faster than every cheaper one."""
    points.sort(key=lambda o: (o.cost, o.latency_ms))
    out: list[Option] = []
    for o in points:
        if not out or o.latency_ms < out[-1].latency_ms:  # sorted, so a same-cost later point is slower
            out.append(o)
    return out


@lru_cache(maxsize=1 << 12)
def _configs(
    perf: PerfModel,
    unit: Unit,
    length: int,
    context: int,
    batches: tuple[int, ...],
) -> tuple[tuple[int, int, float], ...]:
    """(batch, GPUs, pass ms) of every config; independent of the arrival rate, so a live loop at steady
    token lengths computes it once."""
    return tuple(
        (b, g, pass_ms(perf, unit, b, length, g))
        for b in batches
        for g in gpu_choices(min_gpus(perf, unit, b, context))
    )


def frontier(
    perf: PerfModel,
    unit: Unit,
    work: Work,
    batches: Sequence[int],
    q: float,
    *,
    budget_ms: float = math.inf,
    r_min: int = 1,
    r_max: int | None = None,
) -> list[Option]:
    """The pool's Pareto frontier of (GPUs, latency) over batch, GPUs per replica and replicas."""
    cap = r_max if r_max is not None else 1 << 30
    configs: list[tuple[int, float, int, int, float]] = []  # cost_lb, pass, batch, gpus, jobs/s
    lo = max(r_min, 1)
    for b, g, s_ms in _configs(perf, unit, work.length, work.context, tuple(batches)):
        if s_ms > budget_ms:
            continue
        jobs = work.seq_steps_per_s / b
        r0 = max(lo, math.floor(jobs * s_ms / 1e3) + 1)
        if r0 <= cap:
            configs.append((r0 * g, s_ms, b, g, jobs))
    configs.sort()
    found: list[_Point] = []
    # Dominance bound: the least latency among points found so far that cost at most the next config's
    # cheapest point. Configs come in increasing cheapest cost and every new point costs at least its
    # config's cheapest, so points enter the running minimum from a heap in cost order.
    pending: list[tuple[int, float]] = []
    best_lat = math.inf
    for cost_lb, s_ms, b, g, jobs in configs:
        while pending and pending[0][0] <= cost_lb:
            best_lat = min(best_lat, heapq.heappop(pending)[1])
        if best_lat <= s_ms:
            continue  # everything this config offers is matched by a point already found
        pts = _sweep(b, g, s_ms, jobs, cost_lb // g, cap, q)
        found.extend(pts)
        for pt in pts:
            heapq.heappush(pending, (pt[0], pt[1]))
    found.sort()
    out: list[Option] = []
    for cost, lat, w, r, b, g, s_ms, rho in found:
        if not out or lat < out[-1].latency_ms:
            out.append(Option(b, g, r, s_ms, w, rho, cost, lat))
    return out


def solve_stage(frontiers: Sequence[list[Option]], budget_ms: float) -> list[Option] | None:
    """One option per pool with Σ latency ≤ budget at the fewest Σ GPUs (ties: least latency); exact."""
    if not frontiers or any(not f for f in frontiers):
        return None
    order = sorted(range(len(frontiers)), key=lambda i: len(frontiers[i]))
    fastest = [frontiers[i][-1].latency_ms for i in order]
    rest = [sum(fastest[k + 1 :]) for k in range(len(order))]
    partial: list[tuple[int, float, tuple[Option, ...]]] = [(0, 0.0, ())]
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
    best: tuple[int, float, tuple[Option, ...]] | None = None
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
    for op in unit.ops:
        share = perf.pass_latency_ms(unit.stage, op, opt.batch, length, opt.gpus) / opt.pass_ms
        loads.append(
            OperatorLoad(perf.busy_watts(unit.stage, op, opt.batch, length), min(1.0, opt.rho * share))
        )
    return opt.cost * gpu_watts(perf.gpu, loads)


def evaluate(
    perf: PerfModel, unit: Unit, work: Work, batch: int, gpus: int, replicas: int, q: float
) -> float:
    """ℓ = W_q + s (ms) of one pool configuration: the latency model the search optimises, exposed so
    a brute-force test can check the search against it."""
    s_ms = pass_ms(perf, unit, batch, work.length, gpus)
    return wait_ms(replicas, work.seq_steps_per_s / batch, s_ms / 1e3, q) + s_ms


def describe(pool: PoolKey, opt: Option, percentile: float) -> str:
    return (
        f"{pool}: {opt.replicas} replicas × {opt.gpus} GPUs at batch {opt.batch}: ρ={opt.rho:.2f}, "
        f"wait p{percentile:g} {opt.wait_ms:.1f} ms, pass {opt.pass_ms:.1f} ms."
    )


def stage_totals(chosen: Mapping[PoolKey, Option]) -> tuple[float, int]:
    return sum(o.latency_ms for o in chosen.values()), sum(o.cost for o in chosen.values())
