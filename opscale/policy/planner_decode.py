"""Decode: continuous batching of resident sequences, sized for the sequences that are actually resident.

Residency (Little's law). A request with o = out − 1 decode tokens stays resident for o token rounds of
τ each, so with λ requests/s the mean number of resident sequences is N̄ = λ·E[o]·τ. Admissions are
Poisson and residence times independent, so N is Poisson (M/G/∞) and its q-quantile is ≈ N̄ + z_q·√N̄.

Step time (the simulator's continuous batching, ``opscale.sim.engine``). With N resident sequences, pool
p (R_p replicas, pass size b_p) runs k_p = ⌈N/(R_p·b_p)⌉ passes of min(b_p, ⌈N/R_p⌉) sequences per token
round, at the mean KV length of the resident sequences; one round is

    τ(N) = max( Σ_p s_p + hops,  max_p k_p·s_p )

— latency-bound (a token traverses every pool) or throughput-bound (the slowest pool's passes). There
is no queue wait: a new sequence joins the next round. The plan's batch is a pass size, not a cap on
residents (KV memory is).

Fixed point. τ depends on N and N on τ. A configuration meets a step target τ_t iff τ(N̄(τ_t)) ≤ τ_t:
for τ(N) ≈ α + βN (flat, then linear in the batch) the fixed point τ* = α/(1 − λE[o]β) is ≤ τ_t exactly
when that holds. So for each target τ_t on a grid (fractions of the TBT budget) the stage is sized at
N_q(τ_t) — each pool's contribution k_p·s_p is then separable and the exact knapsack applies (Σ k_p·s_p
bounds the max-form step from above; equal when k_p = 1 or one pool) — and the cheapest target wins.

KV residency. Every resident sequence reserves its prompt + output (admission reserves the whole
request, as conservative engines do — SGLang's admission control estimates the tokens still to come so
it never has to preempt). Residents are length-biased: a request is resident in proportion to o, so
the reserved tokens per resident have mean E[o·(in + out)]/E[o], and the reserved total of N residents is
compound Poisson: mean N̄·E_r[X], variance N̄·E_r[X²], third cumulant N̄·E_r[X³]. The KV-holding pool
(``decode/attention`` or ``decode/model``) is sized for its q-quantile across its replicas, and every
replica must hold the longest request alone (``req_max``). Planned this way a KV pool makes a sequence
wait for memory at most 1 − q of the time at the planned load. The quantile is the Cornish–Fisher
expansion to the skewness γ = N̄·E_r[X³]/(N̄·E_r[X²])^{3/2}: μ + σ·(z + (z² − 1)·γ/6). The normal
approximation alone (γ = 0) is right when many similar sequences are resident; with few residents and a
long-prompt tail (llama3-70b at 2 req/s, 8% of prompts 16k–128k: ~24 residents) the sum is skewed, the
normal quantile fell short and 1.5% of requests waited seconds for KV before their second token.

Per-request TBT (what SLO attainment counts): the mean gap between a request's tokens, the gap before
its second token included. That gap adds the KV hand-off from prefill, streamed layer by layer while
prefill runs (Mooncake, FAST '25; DistServe, OSDI '24), so only the last layer's share remains:
KV(in)/(layers·bandwidth), spread over the request's o gaps. The prediction is τ at N_q and at the quantile
of the residents' context (``context_q``) plus that share's mean, or the mean step plus its quantile,
whichever is larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from opscale.model import PerfModel
from opscale.policy.decode_load import DecodeLoad
from opscale.policy.planner_core import (
    EPSILON,
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
from opscale.policy.types import Infeasibility, InfeasibilityKind, Limits, PoolKey

TINY = 0.01  # a pool whose cheapest option takes at most this share of a token round needs no search
# Step targets tried, as fractions of the TBT budget.
TARGETS = (1.0, 0.8, 0.62, 0.47, 0.35, 0.25, 0.17)


def holder(unit: Unit) -> bool:
    return "attention" in unit.ops


def decode_gpus(perf: PerfModel, unit: Unit, load: DecodeLoad, batch: int) -> tuple[float, ...]:
    return replica_sizes(perf, unit, batch, load.req_max if holder(unit) else 0.0)


def _per_replica(n: float, replicas: int, batch: int) -> tuple[int, int]:
    """(sequences per pass, passes per round) for ``n`` residents over ``replicas`` at pass size ``batch``."""
    per_rep = max(1, math.ceil(n / replicas - 1e-9))
    return min(batch, per_rep), math.ceil(per_rep / batch)


def decode_batches(batches: Sequence[int]) -> tuple[int, ...]:
    """The pass sizes worth searching: the two largest. With every resident sequence stepping each round,
    a smaller pass only splits a round into more passes, each paying the weights' read again, so it is
    never faster; the second largest is kept for memory (a pass's activations)."""
    return tuple(sorted(batches)[-2:])


def micro_split(per: int, passes: int, micro: int) -> tuple[int, int]:
    """(micro-batch size, passes per round) when each pass of ``per`` sequences is split into ``micro``
    micro-batches (never more micro-batches than sequences)."""
    mu = max(1, min(micro, per))
    return math.ceil(per / mu), passes * mu


def decode_frontier(
    perf: PerfModel,
    unit: Unit,
    load: DecodeLoad,
    n_q: float,
    kv_q: float,
    tau_ms: float,
    batches: Sequence[int],
    *,
    r_min: int = 1,
    r_max: int | None = None,
    budget_ms: float = math.inf,
    busy_ms: float = math.inf,
    micro: int = 1,
    shape: Shape | None = None,
    max_cost: float = math.inf,
) -> list[Option]:
    """Pareto options (GPUs, chain contribution s ≤ ``budget_ms``) sized for ``n_q`` residents holding
    ``kv_q`` tokens, whose passes per round take at most ``busy_ms`` (k·μ·s); ``shape``: only replicas of
    that shape (filtered before the Pareto cut, which may otherwise drop the shape: 2 × 2 GPUs at pass 256
    ties 1 × 4 GPUs at 128 in GPUs and loses in latency); ``max_cost``: none of more GPUs."""
    cap = r_max if r_max is not None else 1 << 30
    n = max(1.0, n_q)
    ctx = load.context_q(tau_ms)
    found: list[Option] = []
    for b in decode_batches(batches):
        for g in decode_gpus(perf, unit, load, b):
            if shape is not None and (g != shape.gpus or b != shape.batch):
                continue
            lo = max(1, r_min)
            if holder(unit):
                per_replica_tokens = memory(perf, unit, b, g).kv_tokens()
                lo = max(lo, math.ceil(kv_q / per_replica_tokens - 1e-9))
            # More replicas stop helping once one sequence per replica is as fast as it gets.
            single = pass_ms(perf, unit, 1, ctx, g)
            floor = single * (1.0 + EPSILON)
            # Past max_cost the options are of no use, unless a tiny pool's early return below could
            # still come (it ends the whole search): not once a pass of one sequence is over the line,
            # as no pass is faster than that one.
            most = max_cost if holder(unit) or single > TINY * tau_ms else math.inf
            r = lo
            while r <= cap and r * g <= most:
                per, k = _per_replica(n, r, b)
                m, passes = micro_split(per, k, micro)
                s = pass_ms(perf, unit, m, ctx, g)
                busy = passes * s
                if s <= budget_ms and busy <= busy_ms:
                    found.append(Option(b, g, r, busy, 0.0, min(1.0, busy / tau_ms), r * g, s))
                    if busy <= TINY * tau_ms and not holder(unit):
                        return pareto(found)  # a tiny pool (embedding, lm_head): its cheapest point will do
                per_rep = math.ceil(n / r - 1e-9)
                if per_rep <= 1 or (k == 1 and s <= floor):
                    break
                r = max(r + 1, math.ceil(n / _fewer(per_rep, b, micro) - 1e-9))
    return pareto(found)


def _fewer(per_rep: int, batch: int, micro: int) -> int:
    """The most residents per replica that change a replica's passes (``_per_replica``, ``micro_split``)
    from those of ``per_rep``: the replica counts in between give the same pass and busy time at more
    GPUs, an option the Pareto cut drops, so the search steps over them. Above ``batch`` only the number
    of passes changes, at each multiple of it; below, the micro-batch size, at each multiple of
    ``micro`` (every count under ``micro``, where the micro-batches themselves get fewer)."""
    if per_rep > batch:
        return (math.ceil(per_rep / batch) - 1) * batch
    m = math.ceil(per_rep / max(1, min(micro, per_rep)))
    return (m - 1) * micro if m >= 2 else per_rep - 1


def step_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    n: float,
    kv_len: int,
    hop_ms: Callable[[int], float],
    micro: int = 1,
) -> float:
    """One token round for ``n`` residents: the simulator's formula (module docstring)."""
    lat, worst, hop_tokens = 0.0, 0.0, 0
    for unit, o in path:
        per, k = _per_replica(max(n, 1.0), o.replicas, o.batch)
        m, passes = micro_split(per, k, micro)
        s = pass_ms(perf, unit, m, kv_len, o.gpus)
        lat += s
        worst = max(worst, passes * s)
        hop_tokens = max(hop_tokens, m)
    return max(lat + hop_ms(hop_tokens), worst)


def fixed_point_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    load: DecodeLoad,
    hop_ms: Callable[[int], float],
    micro: int = 1,
) -> float:
    """τ* = τ(N̄(τ*)); ``inf`` when none exists (the pools cannot keep up with the load)."""
    tau = step_ms(perf, path, 1.0, load.kv_len, hop_ms, micro)
    for _ in range(200):
        nxt = step_ms(perf, path, load.residents(tau), load.kv_len, hop_ms, micro)
        if nxt > 1e7:
            return math.inf
        if abs(nxt - tau) <= 1e-6 * tau:
            return nxt
        tau = nxt
    return tau if tau < 1e7 else math.inf


def tbt_quantile_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    load: DecodeLoad,
    hop_ms: Callable[[int], float],
    micro: int = 1,
) -> tuple[float, float]:
    """(per-request TBT at the quantile, the mean step τ*), in ms."""
    tau = fixed_point_ms(perf, path, load, hop_ms, micro)
    if not math.isfinite(tau):
        return math.inf, math.inf
    at_q = step_ms(perf, path, load.residents_q(tau), load.context_q(tau), hop_ms, micro)
    # The step's quantile and the hand-off's are not reached by the same requests: each with the other's
    # typical value, the larger.
    return max(at_q + load.transfer_mean_ms, tau + load.transfer_q_ms), tau


def plan_decode(
    perf: PerfModel,
    units: Sequence[Unit],
    load: DecodeLoad,
    budget_ms: float,
    batches: Sequence[int],
    limits: Limits,
    floors: Mapping[PoolKey, int] | None = None,
    search: str = "exact",
    stage_gpus: int = 0,
    micro: Sequence[int] = (1,),
    shapes: Mapping[PoolKey, Shape] | None = None,
) -> StagePlan:
    """The stage's fewest-GPU plan; ``micro``: the micro-batch counts to try (ping-pong, operator pools
    only: a whole-model replica has nothing to overlap); ``shapes``: keep each pool's replica shape, only
    its replica count free (``opscale.policy.hybrid``)."""
    floors = floors or {}
    shapes = shapes or {}
    if shapes and units[0].pool in shapes:
        micro = (shapes[units[0].pool].micro,)
    hop = hop_model(perf, units, stage_gpus)
    bounds = [stage_bounds(limits, floors, u) for u in units]
    solver = solve_stage_greedy if search == "greedy" else solve_stage
    best: tuple[float, float, list[Option], float, int] | None = None
    for mu in micro if len(units) > 1 else (1,):
        for frac in TARGETS:
            tau_t = budget_ms * frac - load.transfer_mean_ms
            if tau_t <= 0.0:  # the KV hand-off alone takes the budget
                continue
            n_q = load.residents_q(tau_t)
            kv_q = load.kv_tokens_q(tau_t)
            knap = tau_t - hop(math.ceil(min(batches[-1], max(1, math.ceil(n_q))) / mu))
            if knap <= 0:
                continue
            fronts = [
                decode_frontier(
                    perf,
                    u,
                    load,
                    n_q,
                    kv_q,
                    tau_t,
                    batches,
                    r_min=lo,
                    r_max=hi,
                    budget_ms=knap,
                    busy_ms=tau_t,
                    micro=mu,
                    shape=shapes.get(u.pool),
                    # an option dearer than the best plan so far can only be part of a dearer plan (the
                    # exact search; the greedy walks the whole frontier)
                    max_cost=best[0] if best is not None and search != "greedy" else math.inf,
                )
                for u, (lo, hi) in zip(units, bounds, strict=True)
            ]
            sol = solver(fronts, knap)
            if sol is None:
                continue
            tbt, tau = tbt_quantile_ms(perf, list(zip(units, sol, strict=True)), load, hop, mu)
            if tbt > budget_ms:
                continue
            cost = sum(o.cost for o in sol)
            if best is None or (cost, tbt) < (best[0], best[1]):
                best = (cost, tbt, sol, tau, mu)
    if best is None:
        return _decode_fallback(perf, units, load, budget_ms, batches, bounds, hop)
    cost, tbt, sol, tau, mu = best
    chosen = {
        u.pool: Option(
            o.batch, o.gpus, o.replicas, o.pass_ms, 0.0, min(1.0, o.pass_ms / tau), o.cost, o.latency_ms
        )
        for u, o in zip(units, sol, strict=True)
    }
    n = load.residents(tau)
    notes = [
        f"decode: {n:.0f} resident sequences on average (Little: {load.rate_rps:.3g} req/s × "
        f"{load.steps_mean:.0f} tokens × {tau:.1f} ms), planned for the p{100 * load.q:g} of "
        f"{load.residents_q(tau):.0f}; KV for {load.kv_tokens_q(tau):,.0f} tokens at that quantile."
    ]
    if mu > 1:
        notes.append(
            f"decode: each pass runs as {mu} micro-batches in a ping-pong pipeline (attention of one while "
            f"the FFN runs another), a token round of {tau:.1f} ms."
        )
    return StagePlan("decode", chosen, tbt, budget_ms, True, [], notes, mu)


def _decode_fallback(
    perf: PerfModel,
    units: Sequence[Unit],
    load: DecodeLoad,
    budget_ms: float,
    batches: Sequence[int],
    bounds: Sequence[tuple[int, int | None]],
    hop: Callable[[int], float],
) -> StagePlan:
    """No plan meets the TBT budget: the fastest plan the limits allow, sized at the budget's residency."""
    n_q = load.residents_q(budget_ms)
    kv_q = load.kv_tokens_q(budget_ms)
    chosen: dict[PoolKey, Option] = {}
    problems: list[Infeasibility] = []
    for u, (lo, hi) in zip(units, bounds, strict=True):
        front = decode_frontier(perf, u, load, n_q, kv_q, budget_ms, batches, r_min=lo, r_max=hi)
        if front:
            chosen[u.pool] = front[-1]
            continue
        unbounded = decode_frontier(perf, u, load, n_q, kv_q, budget_ms, batches, r_min=lo)
        if not unbounded:
            problems.append(
                Infeasibility(
                    InfeasibilityKind.SLO_UNREACHABLE,
                    f"{u.pool}: no replica of up to 64 GPUs holds the longest request's KV "
                    f"({load.req_max:,} tokens).",
                    pool=u.pool,
                )
            )
            continue
        need = unbounded[0].replicas
        o = unbounded[0]
        chosen[u.pool] = Option(
            o.batch, o.gpus, hi or need, o.pass_ms, 0.0, 1.0, (hi or need) * o.gpus, o.pass_ms
        )
        problems.append(
            Infeasibility(
                InfeasibilityKind.ABOVE_MAX_REPLICAS,
                f"{u.pool}: {load.rate_rps:.3g} req/s need at least {need} replicas to hold the resident "
                f"sequences' KV, above max_replicas {hi}.",
                pool=u.pool,
                needed=need,
                allowed=hi,
            )
        )
    if len(chosen) < len(units):
        for u, (lo, _) in zip(units, bounds, strict=True):
            chosen.setdefault(u.pool, Option(1, 1, lo, math.inf, 0.0, 1.0, lo, math.inf))
        return StagePlan("decode", chosen, math.inf, budget_ms, False, problems)
    tbt, _ = tbt_quantile_ms(perf, [(u, chosen[u.pool]) for u in units], load, hop)
    if not problems:
        problems.append(slo_miss("decode", "TBT", tbt, budget_ms))
    return StagePlan("decode", chosen, tbt, budget_ms, False, problems)
