"""Prefill: prompts queue for a pool's replicas; the TTFT percentile over the prompt-length distribution.

Each pool is a queue of prompts over the window's prompt-length distribution (``prefill_queue``).

TTFT of a path (one pool for a whole model; embedding → attention → FFN → lm_head for operator pools):

    TTFT = Σ_pools W_p + Σ_pools S_p(L) + hops(L)

The services are comonotone (one L for every pool), so their sum is priced per length exactly; the pools'
waits are summed as independent, by numerical convolution (``prefill_batches.combine_waits``), each
priced with its input's pacing (below). A later pool is fed the departures of the one before, smoother
than Poisson by QNA's linking equation (``departure_scv``) — except the path's bottleneck, its most
heavily loaded pool, which waits as if fed the prompts' own arrivals when those are more variable: a
heavily loaded queue's wait is set by its input's variability over long stretches, where the pools before
it pass the arrivals' fluctuations through unsmoothed (the heavy-traffic bottleneck phenomenon: S. Suresh
and W. Whitt, "The heavy-traffic bottleneck phenomenon in open queueing networks", Operations Research
Letters, 1990; the departures' index of dispersion tends to the arrivals' over long times: W. Whitt and
W. You, "A robust queueing network analyzer based on indices of dispersion"). Measured: llama3-70b at 20
req/s of 1,024 tokens, attention (one replica, ρ 0.78) then FFN (two, ρ 0.89): a FIFO replay of the pair
gave a p99 FFN wait of 904 ms against 656 ms priced with QNA's c_a² = 0.39 and 1,063 ms with Poisson
input.

Paced input. The same prompt is long at every pool, so a long service at a later pool follows a long
gap in its input (the pool before spent that prompt's long pass on it): the covariance shortens the wait
and its probability (``queueing.tandem_covariance``, with the measurement).

The percentile is then solved on the mixture over L: Σ_L p(L)·P(W > t − S(L)) = 1 − q — not a sum of
per-pool quantiles.

Search. Per pool, the options (g GPUs per replica, R replicas) are scored by the *proxy*
W_q(R) + S(L_q) (its own wait quantile plus the service of the q-quantile prompt), so the stage's exact
fewest-GPU knapsack (``planner_core.solve_stage``) can add them up; the chosen plan is then re-priced by
the path model above and repaired (a replica added where it buys the most TTFT per GPU) or trimmed (a
replica removed while the SLO still holds) until it is the cheapest the path model accepts nearby. The
proxy, a sum of two quantiles, overstates the path model's percentile of the sum where wait and pass are
both long, so a whole-model stage also tries its other replica sizes under the path model (``plan_prefill``:
llama3-70b, 8 req/s of ShareGPT-like prompts, 3 × 2 GPUs scored 2,146 ms, priced 1,485, measured 1,641
over eight traces, where 2 × 4 had been taken). Not an operator path, whose path model errs more: so
searched, three of its grid plans went to the SLO's edge and missed it by 1.5–2.7% over eight traces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from opscale.model import PerfModel
from opscale.model.memory import PREFILL_CHUNK_TOKENS
from opscale.policy.planner_core import (
    Option,
    Shape,
    StagePlan,
    Unit,
    hop_model,
    memory,
    pareto,
    pass_ms,
    replica_sizes,
    slo_miss,
    solve_stage,
    solve_stage_greedy,
    stage_bounds,
)
from opscale.policy.prefill_batches import combine_waits
from opscale.policy.prefill_queue import (
    PREFILL_MAX_BATCH,
    PrefillLoad,
    QueueState,
    batched,
    pool_queue,
    service,
)
from opscale.policy.queueing import departure_scv, paced_scv, tandem_covariance
from opscale.policy.types import Infeasibility, InfeasibilityKind, Limits, PoolKey

TINY = 0.01  # a pool whose cheapest option takes at most this share of the TTFT budget needs no search
# Prefill pools are planned busy at most this much: near saturation the p99 wait runs away faster than
# any two-moment model tracks (and than a window's rate estimate is accurate), so the last 10% is headroom.
RHO_MAX = 0.9
SATURATED = 1.1  # a batch is big enough once a prompt costs within 10% of its share of a full batch


@lru_cache(maxsize=1 << 12)
def prefill_batch(perf: PerfModel, unit: Unit, median: int) -> int:
    """The pass-size cap for a pool whose typical prompt has ``median`` tokens: the smallest batch whose
    per-prompt time is within ``SATURATED`` of a full batch's. Long prompts already fill the GPU alone
    (cap 1: no prompt waits for a batch-mate's pass); short ones gain throughput from sharing a pass."""
    full = pass_ms(perf, unit, PREFILL_MAX_BATCH, median, 1) / PREFILL_MAX_BATCH
    b = 1
    while b < PREFILL_MAX_BATCH and pass_ms(perf, unit, b, median, 1) / b > SATURATED * full:
        b *= 2
    return b


def kv_tokens_needed(load: PrefillLoad) -> int:
    """KV a prefill attention replica must hold: a chunk's prompts, or the longest prompt alone."""
    return max(PREFILL_CHUNK_TOKENS, load.max_length)


def prefill_gpus(perf: PerfModel, unit: Unit, load: PrefillLoad) -> tuple[float, ...]:
    """GPUs-per-replica choices whose memory holds the unit (and, for attention, the longest prompt)."""
    return replica_sizes(perf, unit, PREFILL_MAX_BATCH, kv_tokens_needed(load))


def prefill_frontier(
    perf: PerfModel,
    unit: Unit,
    load: PrefillLoad,
    *,
    r_min: int = 1,
    r_max: int | None = None,
    budget_ms: float = math.inf,
    shape: Shape | None = None,
) -> list[Option]:
    """Pareto options (GPUs, proxy latency) over GPUs per replica and replicas; see the module docstring.
    ``shape``: only replicas of its GPUs (the pass size follows from the prompts' lengths), filtered before
    the Pareto cut."""
    cap = r_max if r_max is not None else 1 << 30
    iq = _index_of(load, load.length_q)
    batch = prefill_batch(perf, unit, load.median_length)
    found: list[Option] = []
    for g in prefill_gpus(perf, unit, load):
        if shape is not None and g != shape.gpus:
            continue
        sv = service(perf, unit, load.lengths, g)
        s_q = sv.ms[iq]
        if s_q > budget_ms:
            continue
        full, _ = batched(perf, unit, load.lengths, g, batch, batch)
        least = load.rate_rps * sum(p * s for (_, p), s in zip(load.lengths, full, strict=True)) / 1e3
        r = max(r_min, 1, math.floor(least) + 1)
        while r <= cap:
            st = pool_queue(perf, unit, load, g, batch, r)
            if st.stable and st.rho <= RHO_MAX:
                w = st.wait_q_ms
                found.append(Option(batch, g, r, s_q, w, st.rho, r * g, w + s_q))
                if w == 0.0:
                    break
                if w + s_q <= TINY * budget_ms < math.inf and not memory(perf, unit, batch, g).holder:
                    return pareto(found)  # a tiny pool (embedding, lm_head): its cheapest point will do
            r += 1
    return pareto(found)


def _index_of(load: PrefillLoad, n: int) -> int:
    return next(i for i, (m, _) in enumerate(load.lengths) if m == n)


def ttft_quantile_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    load: PrefillLoad,
    hop_ms: Callable[[int], float],
) -> float:
    """The load's q-quantile of TTFT through ``path`` (ms; ``inf`` when a pool is unstable)."""
    total = np.asarray([hop_ms(n) for n, _ in load.lengths])
    queues: list[tuple[QueueState, float]] = []  # each pool's queue, and the c_a² it was priced at
    ca2 = 1.0
    p_len = np.asarray([p for _, p in load.lengths])
    before: tuple[np.ndarray, float] | None = None  # the previous pool's services and ρ
    for unit, opt in path:
        sv = service(perf, unit, load.lengths, opt.gpus)
        ms = np.asarray(sv.ms)
        total = total + ms
        if load.rate_rps > 0.0:
            st = pool_queue(perf, unit, load, opt.gpus, opt.batch, opt.replicas, ca2)
            if not st.stable:
                return math.inf
            cov = 0.0
            if before is not None and before[1] >= st.rho:  # paced while the pool before stays busy
                cov = tandem_covariance(p_len, before[0], before[1], ms, st.rho)
            if cov > 0.0:
                st = pool_queue(
                    perf, unit, load, opt.gpus, opt.batch, opt.replicas, paced_scv(ca2, cov, st.rho, st.scv)
                )
            queues.append((st, ca2))
            ca2 = departure_scv(opt.replicas, st.rho, ca2, st.scv)
            before = (ms, st.rho)
    if queues:
        # the bottleneck: the most heavily loaded pool waits at least as with the prompts' own arrivals
        # (never paced: the first of the busiest pools has none as busy before it)
        b = max(range(len(queues)), key=lambda i: queues[i][0].rho)
        if queues[b][1] < 1.0:
            unit, opt = path[b]
            queues[b] = (pool_queue(perf, unit, load, opt.gpus, opt.batch, opt.replicas, 1.0), 1.0)
    vals, exceed = combine_waits([(st.p_wait, st.wait_ms) for st, _ in queues])
    probs = load.percentile_weights()  # the percentile must hold under every weighting
    keep = probs.max(axis=0) > 0
    total, probs = total[keep], probs[:, keep]
    target = 1.0 - load.q

    def over(t: float) -> float:
        x = t - total
        idx = np.searchsorted(vals, x, side="right") - 1  # P(W > x) = exceed at the last support <= x
        tail = np.where(x < 0.0, 1.0, exceed[np.maximum(idx, 0)])
        return float((probs @ tail).max())

    lo, hi = 0.0, float(total.max() + vals.max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if over(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4 * hi:
            break
    return hi


def repair(
    perf: PerfModel,
    units: Sequence[Unit],
    chosen: list[Option],
    load: PrefillLoad,
    hop_ms: Callable[[int], float],
    budget_ms: float,
    caps: Sequence[int | None],
    floors: Sequence[int],
) -> tuple[list[Option], float]:
    """Re-price ``chosen`` with the path model, then add replicas (most TTFT saved per GPU first) until
    it meets ``budget_ms`` and remove replicas while it still does. Returns the plan and its TTFT."""

    def ttft(opts: list[Option]) -> float:
        return ttft_quantile_ms(perf, list(zip(units, opts, strict=True)), load, hop_ms)

    def resized(i: int, opts: list[Option], delta: int) -> list[Option] | None:
        o = opts[i]
        r = o.replicas + delta
        cap = caps[i]
        if r < max(1, floors[i]) or (cap is not None and r > cap):
            return None
        st = pool_queue(perf, units[i], load, o.gpus, o.batch, r)
        if not st.stable or st.rho > RHO_MAX:
            return None
        new = list(opts)
        new[i] = Option(o.batch, o.gpus, r, o.pass_ms, 0.0, 0.0, r * o.gpus, o.pass_ms)
        return new

    def cur_gpus(opts: list[Option]) -> float:
        return max(o.gpus for o in opts)

    cur = list(chosen)
    lat = ttft(cur)
    for _ in range(256):
        if lat <= budget_ms:
            break
        best: tuple[float, list[Option], float] | None = None
        for i in range(len(cur)):
            cand = resized(i, cur, +1)
            if cand is None:
                continue
            cl = ttft(cand)
            gain = (lat - cl) / cur[i].gpus
            if best is None or gain > best[0]:
                best = (gain, cand, cl)
        if best is None or best[0] * cur_gpus(best[1]) <= 1e-3 * lat:
            break  # nothing buys a meaningful TTFT: the budget is out of reach by adding replicas
        _, cur, lat = best
    improved = lat <= budget_ms
    while improved:
        improved = False
        for i in sorted(range(len(cur)), key=lambda k: -cur[k].gpus):
            cand = resized(i, cur, -1)
            if cand is None:
                continue
            cl = ttft(cand)
            if cl <= budget_ms:
                cur, lat, improved = cand, cl, True
                break
    return cur, lat


def plan_prefill(
    perf: PerfModel,
    units: Sequence[Unit],
    load: PrefillLoad,
    budget_ms: float,
    limits: Limits,
    floors: Mapping[PoolKey, int] | None = None,
    search: str = "exact",
    same_node: float = 1.0,
    shapes: Mapping[PoolKey, Shape] | None = None,
) -> StagePlan:
    """``shapes``: keep each pool's replica shape (GPUs per replica, pass size), only its replica count
    free (the hybrid's hysteresis on shapes, ``opscale.policy.hybrid``)."""
    floors = floors or {}
    shapes = shapes or {}
    measured, load = load, load.sizing  # sized for the estimate's upper bound, predicted as measured
    hop = hop_model(perf, units, same_node)
    bounds = [stage_bounds(limits, floors, u) for u in units]
    proxy_budget = budget_ms - hop(load.length_q)
    fronts = [
        prefill_frontier(perf, u, load, r_min=lo, r_max=hi, budget_ms=proxy_budget, shape=shapes.get(u.pool))
        for u, (lo, hi) in zip(units, bounds, strict=True)
    ]
    sol = (solve_stage_greedy if search == "greedy" else solve_stage)(fronts, proxy_budget)
    if sol is None:  # the proxy is conservative: start from each pool's fastest point and let repair judge
        full = [
            prefill_frontier(perf, u, load, r_min=lo, r_max=hi, shape=shapes.get(u.pool))
            for u, (lo, hi) in zip(units, bounds, strict=True)
        ]
        if all(full):
            sol = [f[-1] for f in full]
    if sol is None:
        return _unstable(
            perf,
            "prefill",
            units,
            bounds,
            load.rate_rps,
            budget_ms,
            lambda u, g: service(perf, u, load.lengths, g).mean_s,
        )
    caps = [hi for _, hi in bounds]
    lows = [lo for lo, _ in bounds]
    if search == "greedy":
        plan, lat = list(sol), ttft_quantile_ms(perf, list(zip(units, sol, strict=True)), load, hop)
    else:
        plan, lat = repair(perf, units, list(sol), load, hop, budget_ms, caps, lows)
        for o in fronts[0] if len(units) == 1 else []:  # a whole model's other sizes (module docstring)
            if o.gpus != plan[0].gpus and (lat > budget_ms or o.cost < plan[0].cost):
                cand, cl = repair(perf, units, [o], load, hop, budget_ms, caps, lows)
                if cl <= budget_ms and (lat > budget_ms or cand[0].cost < plan[0].cost):
                    plan, lat = cand, cl
    met = lat <= budget_ms
    infeasible = [] if met else [slo_miss("prefill", "TTFT", lat, budget_ms)]
    notes = []
    if load is not measured:
        seen = ttft_quantile_ms(perf, list(zip(units, plan, strict=True)), measured, hop)
        notes.append(
            f"prefill: sized for {load.rate_rps:.4g} prompts/s, the upper 95% bound of the "
            f"{measured.rate_rps:.4g} measured (p{100 * load.q:g} TTFT {lat:.1f} ms there); "
            f"predicted {seen:.1f} ms at the measured rate."
        )
        lat = seen
    plan = _with_waits(perf, units, plan, measured)
    chosen = {u.pool: o for u, o in zip(units, plan, strict=True)}
    return StagePlan("prefill", chosen, lat, budget_ms, met, infeasible, notes)


def _with_waits(
    perf: PerfModel, units: Sequence[Unit], plan: list[Option], load: PrefillLoad
) -> list[Option]:
    """Each pool's own wait quantile, busy fraction and q-length pass, for the reasons (the path's TTFT
    is computed separately)."""
    out = []
    i_q = [n for n, _ in load.lengths].index(load.length_q)
    for u, o in zip(units, plan, strict=True):
        st = pool_queue(perf, u, load, o.gpus, o.batch, o.replicas)
        s_q = service(perf, u, load.lengths, o.gpus).ms[i_q]
        w = st.wait_q_ms if math.isfinite(st.wait_q_ms) else math.inf
        out.append(Option(o.batch, o.gpus, o.replicas, s_q, w, min(1.0, st.rho), o.cost, w + s_q))
    return out


def _unstable(
    perf: PerfModel,
    stage: str,
    units: Sequence[Unit],
    bounds: Sequence[tuple[int, int | None]],
    rate: float,
    budget_ms: float,
    mean_service_s: Callable[[Unit, int], float],
) -> StagePlan:
    """Some pool cannot be stable within its max_replicas: report the replicas it needs."""
    chosen: dict[PoolKey, Option] = {}
    problems = []
    for u, (lo, hi) in zip(units, bounds, strict=True):
        g = 1
        while not memory(perf, u, 1, g).fits and g < 64:
            g *= 2
        es = mean_service_s(u, g)
        need = max(lo, math.floor(rate * es) + 1)
        r = need if hi is None else min(hi, need)
        chosen[u.pool] = Option(1, g, r, es * 1e3, math.inf, 1.0, r * g, math.inf)
        if hi is not None and need > hi:
            problems.append(
                Infeasibility(
                    InfeasibilityKind.ABOVE_MAX_REPLICAS,
                    f"{u.pool}: {rate:,.4g} prompts/s need at least {need} replicas to be stable, above "
                    f"max_replicas {hi}.",
                    pool=u.pool,
                    needed=need,
                    allowed=hi,
                )
            )
    if not problems:
        problems.append(slo_miss(stage, "TTFT", math.inf, budget_ms))
    return StagePlan(stage, chosen, math.inf, budget_ms, False, problems)
