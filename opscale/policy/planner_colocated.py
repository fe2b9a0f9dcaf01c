"""Colocated serving: one pool per unit (``serving/attention``… or ``serving/model``) runs both stages.

Model. A replica of a serving pool runs two kinds of pass, first-come first-served: prefill passes of
b_p prompts (arriving at λ/b_p, taking s_p = the unit's prefill pass at the prompt length) and decode
passes of b_d sequences (arriving at λ·n_out/b_d, taking s_d at the mean KV length). The pool is one
M/M/R queue of both: job rate Λ = λ/b_p + λ·n_out/b_d, offered load a = (λ/b_p)·s_p + (λ·n_out/b_d)·s_d,
mean service a/Λ; every pass waits W_q of that queue. So a pool adds W_q + s_p to TTFT and W_q + s_d to
TBT, and a request's latencies are the sums over the pools its passes visit, as in the disaggregated
case (``planner_core``). A replica's GPUs hold, under the one memory model (``opscale.model.memory``),
the weights once and a KV pool for b_d sequences at full length plus b_p prompts.

Search. The same as ``planner_core`` with two budgets: per pool, every (b_p, b_d, g, R) point
(prefill batches bounded at ``MAX_PREFILL_BATCH``: a prefill pass grows linearly in b_p, so beyond a
few prompts batching only adds latency) cut to the 3-D Pareto frontier of (GPUs, TTFT share, TBT
share); then an exact merge of the pools' frontiers for the fewest GPUs with Σ TTFT ≤ SLO and
Σ TBT ≤ SLO. Exact, so more load never yields fewer GPUs here either. Slower than the disaggregated
planner (a 3-D frontier is longer): tens of milliseconds rather than one.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from opscale.model import PerfModel
from opscale.model.energy import OperatorLoad, gpu_watts
from opscale.policy.planner_core import Unit, batch_candidates, gpu_choices, memory, pass_ms
from opscale.policy.queueing import erlang_b
from opscale.policy.types import (
    SLO,
    Infeasibility,
    InfeasibilityKind,
    Limits,
    LoadWindow,
    PoolKey,
    PoolPlan,
    Prediction,
)

MAX_PREFILL_BATCH = 16


@dataclass(frozen=True, slots=True)
class Work:
    """One stage's load at mean lengths: ``seq_steps_per_s`` sequence-passes/s (prefill: prompts/s;
    decode: tokens/s), ``length`` tokens per sequence for latency, ``context`` for memory."""

    seq_steps_per_s: float
    length: int
    context: int


def stage_work(load: LoadWindow, stage: str) -> Work:
    n_in = max(1.0, load.input_tokens_mean)
    n_out = max(0.0, load.output_tokens_mean)
    if stage == "prefill":
        return Work(load.arrival_rate_rps, math.ceil(n_in), math.ceil(n_in))
    return Work(load.arrival_rate_rps * n_out, max(1, round(n_in + n_out / 2)), math.ceil(n_in + n_out))


def least_gpus(perf: PerfModel, dec: Unit, bd: int, kv_tokens: int) -> int | None:
    """Fewest GPUs (power of two) whose replica fits the one memory model with ``kv_tokens`` of KV."""
    g = 1
    while g <= 64:
        m = memory(perf, dec, bd, g)
        if m.fits and (not m.holder or m.kv_tokens() >= kv_tokens):
            return g
        g *= 2
    return None


@dataclass(frozen=True, slots=True)
class CoOption:
    cost: int
    ttft_ms: float  # W + s_p
    tbt_ms: float  # W + s_d
    prefill_batch: int
    decode_batch: int
    gpus: int
    replicas: int
    prefill_ms: float
    decode_ms: float
    wait_ms: float
    rho: float


def wait_ms(replicas: int, jobs_per_s: float, service_s: float, q: float) -> float:
    """W_q of M/M/R in ms (``inf`` if unstable): one pass's wait in the mixed queue (the sweep's
    recursion, written out once for a single configuration)."""
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


class _Stair:
    """2-D Pareto staircase of (x, y): x ascending, y strictly descending."""

    __slots__ = ("xs", "ys")

    def __init__(self) -> None:
        self.xs: list[float] = []
        self.ys: list[float] = []

    def dominated(self, x: float, y: float) -> bool:
        i = bisect.bisect_right(self.xs, x) - 1
        return i >= 0 and self.ys[i] <= y

    def add(self, x: float, y: float) -> None:
        if self.dominated(x, y):
            return
        i = bisect.bisect_left(self.xs, x)
        j = i
        while j < len(self.xs) and self.ys[j] >= y:
            j += 1
        self.xs[i:j] = [x]
        self.ys[i:j] = [y]


def _pareto3(points: list[CoOption]) -> list[CoOption]:
    points.sort(key=lambda o: (o.cost, o.ttft_ms, o.tbt_ms))
    stair, out = _Stair(), []
    for o in points:
        if not stair.dominated(o.ttft_ms, o.tbt_ms):
            out.append(o)
            stair.add(o.ttft_ms, o.tbt_ms)
    return out


def co_frontier(
    perf: PerfModel,
    pre: Unit,
    dec: Unit,
    wp: Work,
    wd: Work,
    slo: SLO,
    max_batch: int,
    *,
    r_min: int = 1,
    r_max: int | None = None,
    budgets: bool = True,
) -> list[CoOption]:
    cap = r_max if r_max is not None else 1 << 30
    tail = 1.0 - slo.quantile
    configs = []
    for bp in batch_candidates(min(max_batch, MAX_PREFILL_BATCH)):
        for bd in batch_candidates(max_batch):
            kv = bd * wd.context + bp * wp.context
            for g in gpu_choices(least_gpus(perf, dec, bd, kv)):
                sp = pass_ms(perf, pre, bp, wp.length, g)
                sd = pass_ms(perf, dec, bd, wd.length, g)
                if budgets and (sp > slo.ttft_ms or sd > slo.tbt_ms):
                    continue
                jp, jd = wp.seq_steps_per_s / bp, wd.seq_steps_per_s / bd
                a = (jp * sp + jd * sd) / 1e3
                r0 = max(r_min, 1, math.floor(a) + 1)
                if r0 <= cap:
                    configs.append((r0 * g, sp, sd, bp, bd, g, jp + jd, a))
    configs.sort()
    found: list[CoOption] = []
    pending: list[tuple[int, float, float]] = []
    stair = _Stair()
    for cost_lb, sp, sd, bp, bd, g, jobs, a in configs:
        while pending and pending[0][0] <= cost_lb:
            _, x, y = heapq.heappop(pending)
            stair.add(x, y)
        if stair.dominated(sp, sd):
            continue
        r = cost_lb // g
        if jobs == 0.0 or a == 0.0:  # no load, or so little that the offered load underflows
            found.append(CoOption(r * g, sp, sd, bp, bd, g, r, sp, sd, 0.0, 0.0))
            continue
        drain_per_r = jobs / a  # μ = Λ / a: the mean service rate of the mixed stream
        b = erlang_b(r, a)
        while r <= cap:
            c = r * b / (r - a * (1.0 - b))
            w = 0.0 if c <= tail else 1e3 * math.log(min(1.0, c) / tail) / (r * drain_per_r - jobs)
            o = CoOption(r * g, w + sp, w + sd, bp, bd, g, r, sp, sd, w, a / r)
            found.append(o)
            heapq.heappush(pending, (o.cost, o.ttft_ms, o.tbt_ms))
            if w == 0.0:
                break
            r += 1
            b = a * b / (r + a * b)
    return _pareto3(found)


def solve_two(frontiers: Sequence[list[CoOption]], t1: float, t2: float) -> list[CoOption] | None:
    """One option per pool, Σ TTFT ≤ t1 and Σ TBT ≤ t2, fewest Σ GPUs (ties: least Σ TTFT + Σ TBT)."""
    if not frontiers or any(not f for f in frontiers):
        return None
    order = sorted(range(len(frontiers)), key=lambda i: len(frontiers[i]))
    m1 = [min(o.ttft_ms for o in frontiers[i]) for i in order]
    m2 = [min(o.tbt_ms for o in frontiers[i]) for i in order]
    partial: list[tuple[int, float, float, tuple[CoOption, ...]]] = [(0, 0.0, 0.0, ())]
    for k, i in enumerate(order[:-1]):
        r1, r2 = sum(m1[k + 1 :]), sum(m2[k + 1 :])
        merged = [
            (c + o.cost, x + o.ttft_ms, y + o.tbt_ms, (*ch, o))
            for c, x, y, ch in partial
            for o in frontiers[i]
            if x + o.ttft_ms + r1 <= t1 and y + o.tbt_ms + r2 <= t2
        ]
        merged.sort(key=lambda t: (t[0], t[1], t[2]))
        stair, partial = _Stair(), []
        for t in merged:
            if not stair.dominated(t[1], t[2]):
                partial.append(t)
                stair.add(t[1], t[2])
    best: tuple[int, float, tuple[CoOption, ...]] | None = None
    for c, x, y, ch in partial:
        for o in frontiers[order[-1]]:  # cheapest first: the first that fits is this partial's best
            if x + o.ttft_ms <= t1 and y + o.tbt_ms <= t2:
                cand = (c + o.cost, x + y + o.ttft_ms + o.tbt_ms, (*ch, o))
                if best is None or cand[:2] < best[:2]:
                    best = cand
                break
    if best is None:
        return None
    chosen = dict(zip(order, best[2], strict=True))
    return [chosen[i] for i in range(len(frontiers))]


def co_watts(perf: PerfModel, pre: Unit, dec: Unit, o: CoOption, wp: Work, wd: Work) -> float:
    r = max(o.replicas, 1)
    busy_p = wp.seq_steps_per_s / o.prefill_batch * o.prefill_ms / 1e3 / r
    busy_d = wd.seq_steps_per_s / o.decode_batch * o.decode_ms / 1e3 / r
    loads = []
    for unit, batch, work, busy, total in (
        (pre, o.prefill_batch, wp, busy_p, o.prefill_ms),
        (dec, o.decode_batch, wd, busy_d, o.decode_ms),
    ):
        for op in unit.ops:
            share = perf.pass_latency_ms(unit.stage, op, batch, work.length, o.gpus) / total
            loads.append(
                OperatorLoad(perf.busy_watts(unit.stage, op, batch, work.length), min(1.0, busy * share))
            )
    return o.cost * gpu_watts(perf.gpu, loads)


@dataclass(frozen=True, slots=True)
class CoPlan:
    pools: dict[PoolKey, PoolPlan]
    prediction: Prediction
    reasons: list[str]
    infeasible: list[Infeasibility]


def plan_colocated(
    perf: PerfModel,
    pools: Sequence[tuple[PoolKey, tuple[str, ...]]],
    wp: Work,
    wd: Work,
    slo: SLO,
    limits: Limits,
    max_batch: int,
) -> CoPlan:
    """Fewest-GPU colocated plan; each pool ``(key, ops)`` runs ``ops`` of both stages."""
    units = [(key, Unit(key, "prefill", ops), Unit(key, "decode", ops)) for key, ops in pools]
    bounds = [(max(1, limits.for_pool(k).min_replicas), limits.for_pool(k).max_replicas) for k, _, _ in units]
    fronts = [
        co_frontier(perf, pre, dec, wp, wd, slo, max_batch, r_min=lo, r_max=hi)
        for (_, pre, dec), (lo, hi) in zip(units, bounds, strict=True)
    ]
    sol = solve_two(fronts, slo.ttft_ms, slo.tbt_ms)
    infeasible: list[Infeasibility] = []
    if sol is None:
        sol = []
        for (key, pre, dec), (lo, hi) in zip(units, bounds, strict=True):
            full = co_frontier(perf, pre, dec, wp, wd, slo, max_batch, r_min=lo, r_max=hi, budgets=False)
            if not full:
                full = co_frontier(perf, pre, dec, wp, wd, slo, max_batch, r_min=lo, budgets=False)
                need = min(o.replicas for o in full)
                infeasible.append(
                    Infeasibility(
                        InfeasibilityKind.ABOVE_MAX_REPLICAS,
                        f"{key}: needs at least {need} replicas to be "
                        f"stable at any batch size, above max_replicas {hi}.",
                        pool=key,
                        needed=need,
                        allowed=hi,
                    )
                )
            sol.append(min(full, key=lambda o: o.ttft_ms / slo.ttft_ms + o.tbt_ms / slo.tbt_ms))
        if not infeasible:
            infeasible.append(
                Infeasibility(
                    InfeasibilityKind.SLO_UNREACHABLE,
                    f"serving: no plan within the replica limits meets TTFT {slo.ttft_ms:g} ms and TBT "
                    f"{slo.tbt_ms:g} ms together; the most balanced one predicts TTFT "
                    f"{sum(o.ttft_ms for o in sol):.1f} ms, TBT {sum(o.tbt_ms for o in sol):.1f} ms.",
                )
            )
    tag = f"p{slo.percentile:g}"
    out: dict[PoolKey, PoolPlan] = {}
    reasons = [
        f"colocated plan for {wp.seq_steps_per_s:.4g} req/s on {perf.gpu.key}: each serving pool "
        f"runs prefill and decode passes in one M/M/R queue."
    ]
    watts = 0.0
    for (key, pre, dec), o, (_, hi) in zip(units, sol, bounds, strict=True):
        capped = o.replicas if hi is None else min(o.replicas, hi)
        w = co_watts(perf, pre, dec, o, wp, wd)
        watts += w
        out[key] = PoolPlan(capped, o.decode_batch, o.gpus, o.tbt_ms if capped == o.replicas else None, w)
        reasons.append(
            f"{key}: {capped} replicas × {o.gpus} GPUs, prefill batch {o.prefill_batch}, decode "
            f"batch {o.decode_batch}: ρ={o.rho:.2f}, wait {tag} {o.wait_ms:.1f} ms, prefill pass "
            f"{o.prefill_ms:.1f} ms, decode pass {o.decode_ms:.1f} ms."
        )
    ttft, tbt = sum(o.ttft_ms for o in sol), sum(o.tbt_ms for o in sol)
    gpus = sum(p.replicas * p.gpus_per_replica for p in out.values())
    reasons.append(
        f"serving: TTFT {tag} {ttft:.1f} ms (SLO {slo.ttft_ms:g}), TBT {tag} {tbt:.1f} ms "
        f"(SLO {slo.tbt_ms:g}) with {gpus} GPUs."
    )
    return CoPlan(out, Prediction(ttft, tbt, gpus, watts), reasons, infeasible)
