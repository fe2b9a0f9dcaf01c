"""From a load window to a whole plan: stage workloads, the per-stage search with its infeasibility
reports, and the plan's prediction and reasons. Shared by ``operator`` and ``model_level``.

Token lengths. Prefill passes are priced at the mean prompt length; decode passes at the mean KV length
over a sequence's life, prompt + output/2 (the KV grows by one token per step). Memory is sized for a
batch of sequences at full length, prompt + output (means: a batch rarely holds many p99 sequences at
once, and engines preempt when it does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opscale.model import PerfModel
from opscale.policy.planner_core import (
    Option,
    Unit,
    Work,
    describe,
    frontier,
    gpu_choices,
    min_gpus,
    option,
    option_watts,
    pass_ms,
    solve_stage,
    solve_stage_greedy,
)
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

NO_LIMITS = Limits()


def stage_work(load: LoadWindow, stage: str) -> Work:
    n_in = max(1.0, load.input_tokens_mean)
    n_out = max(0.0, load.output_tokens_mean)
    if stage == "prefill":
        return Work(load.arrival_rate_rps, math.ceil(n_in), math.ceil(n_in))
    return Work(load.arrival_rate_rps * n_out, max(1, round(n_in + n_out / 2)), math.ceil(n_in + n_out))


def budget_for(slo: SLO, stage: str) -> float:
    return slo.ttft_ms if stage == "prefill" else slo.tbt_ms


@dataclass(frozen=True, slots=True)
class StagePlan:
    stage: str
    chosen: dict[PoolKey, Option]
    latency_ms: float
    budget_ms: float
    met: bool
    infeasible: list[Infeasibility] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return sum(o.cost for o in self.chosen.values())


def _best_throughput(
    perf: PerfModel, unit: Unit, work: Work, batches: Sequence[int], replicas: int
) -> Option:
    """The config that carries the most load per GPU, at ``replicas`` (used when none is stable)."""
    best: Option | None = None
    for b in batches:
        g = gpu_choices(min_gpus(perf, unit, b, work.context))[0]
        s = pass_ms(perf, unit, b, work.length, g)
        rho = work.seq_steps_per_s / b * s / 1e3 / max(replicas, 1)
        opt = option(b, g, replicas, s, math.inf, rho)
        if best is None or rho / g < best.rho / best.gpus:
            best = opt
    assert best is not None
    return best


def plan_stage(
    perf: PerfModel,
    stage: str,
    units: Sequence[Unit],
    work: Work,
    budget_ms: float,
    q: float,
    batches: Sequence[int],
    limits: Limits,
    floors: Mapping[PoolKey, int] | None = None,
    search: str = "exact",
) -> StagePlan:
    """The fewest-GPU plan for one stage meeting ``budget_ms``; if none exists within the replica
    limits, the fastest plan there is, with an ``Infeasibility`` saying why. ``search="greedy"``
    uses the paper's greedy instead of the exact solve (for comparison)."""
    floors = floors or {}

    def bounds(u: Unit) -> tuple[int, int | None]:
        lim = limits.for_pool(u.pool)
        return max(1, lim.min_replicas, floors.get(u.pool, 0)), lim.max_replicas

    fronts = [
        frontier(perf, u, work, batches, q, budget_ms=budget_ms, r_min=bounds(u)[0], r_max=bounds(u)[1])
        for u in units
    ]
    sol = (solve_stage_greedy if search == "greedy" else solve_stage)(fronts, budget_ms)
    if sol is not None:
        chosen = {u.pool: o for u, o in zip(units, sol, strict=True)}
        return StagePlan(stage, chosen, sum(o.latency_ms for o in sol), budget_ms, True)
    # No plan meets the budget: report why, and offer the fastest plan the limits allow.
    chosen, problems = {}, []
    for u in units:
        lo, hi = bounds(u)
        full = frontier(perf, u, work, batches, q, r_min=lo, r_max=hi)
        if full:
            chosen[u.pool] = full[-1]
            continue
        unbounded = frontier(perf, u, work, batches, q, r_min=lo)
        need = min(o.replicas for o in unbounded)
        chosen[u.pool] = _best_throughput(perf, u, work, batches, need if hi is None else hi)
        problems.append(
            Infeasibility(
                InfeasibilityKind.ABOVE_MAX_REPLICAS,
                f"{u.pool}: {work.seq_steps_per_s:,.6g} sequence-passes/s need at least {need} replicas "
                f"to be stable at any batch size, above max_replicas {hi}.",
                pool=u.pool,
                needed=need,
                allowed=hi,
            )
        )
    latency = sum(o.latency_ms for o in chosen.values())
    label = "TTFT" if stage == "prefill" else "TBT"
    if not problems:
        problems.append(
            Infeasibility(
                InfeasibilityKind.SLO_UNREACHABLE,
                f"{stage}: the fastest {label} reachable within the replica limits is {latency:.1f} ms, over "
                f"the {budget_ms:g} ms SLO (pass times alone: "
                f"{sum(o.pass_ms for o in chosen.values()):.1f} ms); planning the fastest configuration.",
            )
        )
    return StagePlan(stage, chosen, latency, budget_ms, False, problems)


@dataclass(frozen=True, slots=True)
class Plan:
    pools: dict[PoolKey, PoolPlan]
    prediction: Prediction
    reasons: list[str]
    infeasible: list[Infeasibility]
    stages: tuple[StagePlan, ...]
    units: Mapping[PoolKey, Unit] = field(default_factory=dict)
    works: Mapping[str, Work] = field(default_factory=dict)


def assemble(
    perf: PerfModel,
    stages: Sequence[StagePlan],
    units: Mapping[PoolKey, Unit],
    works: Mapping[str, Work],
    slo: SLO,
    header: str,
) -> Plan:
    pools: dict[PoolKey, PoolPlan] = {}
    reasons = [header]
    watts_total, gpus_total = 0.0, 0
    latency: dict[str, float] = {}
    infeasible: list[Infeasibility] = []
    tag = f"p{slo.percentile:g}"
    for sp in stages:
        work = works[sp.stage]
        for pool, opt in sp.chosen.items():
            w = option_watts(perf, units[pool], opt, work.length) if math.isfinite(opt.latency_ms) else None
            pools[pool] = PoolPlan(
                opt.replicas,
                opt.batch,
                opt.gpus,
                opt.latency_ms if math.isfinite(opt.latency_ms) else None,
                w,
            )
            watts_total += w or 0.0
            reasons.append(describe(pool, opt, slo.percentile))
        gpus_total += sp.gpus
        latency[sp.stage] = sp.latency_ms
        label = "TTFT" if sp.stage == "prefill" else "TBT"
        verdict = "meets" if sp.met else "MISSES"
        reasons.append(
            f"{sp.stage}: {label} {tag} predicted {sp.latency_ms:.1f} ms {verdict} the "
            f"{sp.budget_ms:g} ms SLO with {sp.gpus} GPUs "
            f"({work.seq_steps_per_s:,.6g} sequence-passes/s, length {work.length})."
        )
        infeasible.extend(sp.infeasible)
    pred = Prediction(
        ttft_ms=_finite(latency.get("prefill")),
        tbt_ms=_finite(latency.get("decode")),
        gpus=gpus_total,
        watts=watts_total,
    )
    return Plan(pools, pred, reasons, infeasible, tuple(stages), dict(units), dict(works))


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
