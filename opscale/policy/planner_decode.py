"""Decode: continuous batching of resident sequences, sized for the sequences that are actually resident.

Residency (Little's law). A request with o = out − 1 decode tokens stays resident for o token rounds of
τ each, so with λ requests/s the mean number of resident sequences is N̄ = λ·E[o]·τ. Admissions are
Poisson and, were residence times independent of N, N would be Poisson (M/G/∞), its q-quantile
≈ N̄ + z_q·√N̄. But τ grows with N (each resident adds its KV read and its share of the pass), so a
surplus of residents is served more slowly and stays longer: departures run at N/(E[o]·τ(N)), whose
slope at N̄ is (1 − ε)/(E[o]·τ) with ε = d ln τ / d ln N, and the linear-noise (Ornstein–Uhlenbeck)
approximation of this birth–death process (van Kampen's system-size expansion, Stochastic Processes in
Physics and Chemistry) gives Var N = (births + deaths)/(2 × the deaths' slope) = N̄/(1 − ε). The
quantile is N̄ + z_q·√(N̄/(1 − ε)) (``decode_step.dispersion``: ε from the plan's own step at its fixed
point, capped at 0.9). mixtral-8x7b at 40 req/s of ShareGPT on one 8-GPU replica: ε ≈ 0.32, the
residents' p99 stands 39 above their mean where the simulator measures 40 and Poisson says 32. The
step also follows the residents' mean context L, elasticity a = d ln τ / d ln L; over N residents L has
relative variance c²/N (c² the SCV of one resident's context), and N follows τ (Little, quasi-static:
ΔN/N = (ε·ΔN/N + a·ΔL/L)), adding N̄·a²·c²/(1 − ε)² to Var N — large on a long-tailed mix (mixtral-8x7b,
40 req/s of the long tail, two 8-GPU replicas: a ≈ 0.32, c² ≈ 6, Var N/N̄ 1.9 → 4.1; the simulator
measured about 7: the first-order terms still fall short there). A plan sized at the step target's
Poisson quantile whose holder cannot take this one at its own τ* is sized again for it.

Slots are a cliff. A sequence that finds a whole-model replica's slots full waits for a running one to
finish — seconds, not a token's milliseconds — so a p99 time to the second token within the TBT SLO
needs well under 1 − q of arrivals to find them full, on every trace. The terms above still fall short:
the residents' standard deviation measured in the simulator ran up to 1.36× the modelled one
(mixtral-8x7b, 40 req/s of the long tail, two 8-GPU replicas: 39 against 28; qwen2-57b-a14b, 40 req/s
of ShareGPT, one 8-GPU replica: 21 against 16.5 on one trace of three). Terms left out, not measured
apart: decode's arrivals are prefill's departures, burstier than Poisson when prompts' service varies,
and the linearisation itself. So the slots take the residents' 1 − (1 − q)/10 quantile (z 3.09 against
2.33 for q = 0.99: 1.33× the spread), a calibration from those measurements, not a derivation; KV
memory, whose quantile already carries the reserved tokens' skew, takes the q-quantile.

Step time (the simulator's continuous batching, ``opscale.sim.decode_plane``). With N resident sequences,
a stateless pool p (R_p replicas, pass size b_p) runs k_p = ⌈N/(R_p·b_p)⌉ passes of ⌈N/(R_p·k_p)⌉
sequences per token round, at the mean KV length of the resident sequences; one round is

    τ(N) = max( Σ_p s_p + hops,  max_p k_p·s_p )

— latency-bound (a token traverses every pool) or throughput-bound (the slowest pool's passes). The
attention pool of an operator path runs its residents the same way, as passes (micro-batches, as
MegaScale-Infer's attention nodes do) of its pass size. A whole-model replica is an engine (vLLM,
SGLang) whose batch caps its running sequences (max_num_seqs): R·b run at once, and the surplus waits
for a running one to finish. That wait stretches a resident's mean time per token by N/(R·b), so its k
is that ratio, fluid, where it is above 1 — the mean, continuous in N. (Charged as ⌈N/b⌉ whole passes,
one sequence past the batch doubled every step, each pass re-reading the whole model's weights;
residence doubled with it and the simulator could settle in that slow state.) The plan keeps the
surplus rare: those slots, like the KV, take a quantile of the residents (below).

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
normal quantile fell short and 1.5% of requests waited seconds for KV before their second token. Its
spread is widened by the same 1/(1 − ε) as the residents'.

Per-request TBT (what SLO attainment counts): the mean gap between a request's tokens, the gap before
its second token included. That gap adds the KV hand-off from prefill, streamed layer by layer while
prefill runs (Mooncake, FAST '25; DistServe, OSDI '24), so only the last layer's share remains:
KV(in)/(layers·bandwidth), spread over the request's o gaps. The prediction is τ at N_q and at the quantile
of the residents' context (``context_q``) plus that share's mean, or the mean step plus its quantile,
whichever is larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

from opscale.model import PerfModel
from opscale.policy.decode_load import DecodeLoad
from opscale.policy.decode_step import (
    capped,
    holder,
    holds_residents,
    micro_split,
    per_replica,
    tbt_quantile_ms,
)
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

RESIZES = 3  # frontier searches per step target: the Poisson quantile, then up to two for the spread
TINY = 0.01  # a pool whose cheapest option takes at most this share of a token round needs no search
# Step targets tried, as fractions of the TBT budget.
TARGETS = (1.0, 0.8, 0.62, 0.47, 0.35, 0.25, 0.17)


def decode_gpus(perf: PerfModel, unit: Unit, load: DecodeLoad, batch: int) -> tuple[float, ...]:
    return replica_sizes(perf, unit, batch, load.req_max if holder(unit) else 0.0)


def decode_batches(batches: Sequence[int]) -> tuple[int, ...]:
    """The pass sizes worth searching: the two largest. With every resident sequence stepping each round,
    a smaller pass only splits a round into more passes, each paying the weights' read again, so it is
    never faster; the second largest is kept for memory (a pass's activations)."""
    return tuple(sorted(batches)[-2:])


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
    exclude: Collection[tuple[int, float, int]] = (),
) -> list[Option]:
    """Pareto options (GPUs, chain contribution s ≤ ``budget_ms``) sized for ``n_q`` residents holding
    ``kv_q`` tokens, whose passes per round take at most ``busy_ms`` (k·μ·s); ``shape``: only replicas of
    that shape (filtered before the Pareto cut, which may otherwise drop the shape: 2 × 2 GPUs at pass 256
    ties 1 × 4 GPUs at 128 in GPUs and loses in latency); ``max_cost``: none of more GPUs; ``exclude``:
    none of these (pass size, GPUs, replicas), also filtered before the cut."""
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
                per, k = per_replica(n, r, b, capped(unit))
                m, passes = micro_split(per, k, micro)
                s = pass_ms(perf, unit, m, ctx, g)
                busy = passes * s
                if s <= budget_ms and busy <= busy_ms and (b, g, r) not in exclude:
                    found.append(Option(b, g, r, busy, 0.0, min(1.0, busy / tau_ms), r * g, s))
                    if busy <= TINY * tau_ms and not holder(unit):
                        return pareto(found)  # a tiny pool (embedding, lm_head): its cheapest point will do
                per_rep = math.ceil(n / r - 1e-9)
                if per_rep <= 1 or (k == 1 and s <= floor):
                    break
                # Past the batch every replica count changes the passes (split evenly, or the fluid wait
                # for a whole-model slot); within it the search steps over the counts that change nothing.
                r = r + 1 if per_rep > b else max(r + 1, math.ceil(n / _fewer(per_rep, micro) - 1e-9))
    return pareto(found)


def _fewer(per_rep: int, micro: int) -> int:
    """The most residents per replica (at most the pass size) that change a replica's micro-batch from
    that of ``per_rep`` (``micro_split``): the replica counts in between give the same pass and busy time
    at more GPUs, an option the Pareto cut drops, so the search steps over them. The micro-batch size
    changes at each multiple of ``micro`` (every count under ``micro``, where the micro-batches themselves
    get fewer)."""
    m = math.ceil(per_rep / max(1, min(micro, per_rep)))
    return (m - 1) * micro if m >= 2 else per_rep - 1


def plan_decode(
    perf: PerfModel,
    units: Sequence[Unit],
    load: DecodeLoad,
    budget_ms: float,
    batches: Sequence[int],
    limits: Limits,
    floors: Mapping[PoolKey, int] | None = None,
    search: str = "exact",
    same_node: float = 1.0,
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
    hop = hop_model(perf, units, same_node)
    bounds = [stage_bounds(limits, floors, u) for u in units]
    solver = solve_stage_greedy if search == "greedy" else solve_stage
    best: tuple[float, float, list[Option], float, int, float] | None = None
    # A whole replica's τ* is its own: one that cannot hold its residents there never will, whatever the
    # target. The search takes the next instead (the Pareto cut may have kept the faster of two shapes of
    # equal GPUs over the one with the slots: mixtral-8x7b at 20 req/s of 1,155/211 tokens, one 2-GPU
    # replica at pass 128 over the same at 256, and a 4-GPU decode replica planned where 24 req/s got one
    # of 2 GPUs).
    failed: set[tuple[int, float, int]] = set()
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
            # Sized at the target's Poisson quantile; when the residents at the plan's own τ* spread wider
            # than the holder takes (``dispersion``), sized again for that spread.
            tries = 0
            while tries < RESIZES:
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
                        # an option dearer than the best plan so far can only be part of a dearer plan
                        # (the exact search; the greedy walks the whole frontier)
                        max_cost=best[0] if best is not None and search != "greedy" else math.inf,
                        exclude=failed,
                    )
                    for u, (lo, hi) in zip(units, bounds, strict=True)
                ]
                sol = solver(fronts, knap)
                if sol is None:
                    break
                path = list(zip(units, sol, strict=True))
                tbt, tau, disp = tbt_quantile_ms(perf, path, load, hop, mu)
                if not math.isfinite(tau) or holds_residents(perf, path, load, tau, disp):
                    break
                n_q = max(n_q, load.residents_q(tau, disp))
                kv_q = max(kv_q, load.kv_tokens_q(tau, disp))
                key = (sol[0].batch, sol[0].gpus, sol[0].replicas)
                if len(units) == 1 and key not in failed:
                    failed.add(key)
                else:
                    tries += 1
            else:
                continue
            if sol is None or tbt > budget_ms:
                continue
            cost = sum(o.cost for o in sol)
            if best is None or (cost, tbt) < (best[0], best[1]):
                best = (cost, tbt, sol, tau, mu, disp)
    if best is None:
        return _decode_fallback(perf, units, load, budget_ms, batches, bounds, hop)
    cost, tbt, sol, tau, mu, disp = best
    chosen = {
        u.pool: Option(
            o.batch, o.gpus, o.replicas, o.pass_ms, 0.0, min(1.0, o.pass_ms / tau), o.cost, o.latency_ms
        )
        for u, o in zip(units, sol, strict=True)
    }
    n, kv = load.residents(tau), load.kv_tokens_q(tau, disp)
    notes = [
        f"decode: {n:.0f} resident sequences on average (Little: {load.rate_rps:.3g} req/s × "
        f"{load.steps_mean:.0f} tokens × {tau:.1f} ms), planned for the p{100 * load.q:g} of "
        f"{load.residents_q(tau, disp):.0f}; KV for {kv:,.0f} tokens at that "
        "quantile."
    ]
    if disp > 1.05:
        notes.append(
            f"decode: the residents spread {math.sqrt(disp):.2f}× wider than Poisson's: a step that grows "
            "with the batch keeps the extra sequences resident longer."
        )
    if mu > 1:
        notes.append(
            f"decode: each pass runs as {mu} micro-batches in a ping-pong pipeline (attention of one while "
            f"the FFN runs another), a token round of {tau:.1f} ms."
        )
    return StagePlan("decode", chosen, tbt, budget_ms, True, [], notes, mu, kv)


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
    tbt, _, _ = tbt_quantile_ms(perf, [(u, chosen[u.pool]) for u in units], load, hop)
    if not problems:
        problems.append(slo_miss("decode", "TBT", tbt, budget_ms))
    return StagePlan("decode", chosen, tbt, budget_ms, False, problems, kv_tokens=kv_q)
