"""From a load window to a whole plan: the stage loads (``planner_loads``), each stage's search
(``planner_prefill``, ``planner_decode``) settled for where its replicas can sit, and the plan's
prediction and reasons. Shared by ``operator`` and ``model_level``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from opscale.model import PerfModel
from opscale.policy.decode_step import tbt_quantile_ms
from opscale.policy.planner_core import Shape, StagePlan, Unit, describe, hop_model, node_share, option_watts
from opscale.policy.planner_decode import plan_decode
from opscale.policy.planner_loads import StageLoads, stage_loads
from opscale.policy.planner_prefill import plan_prefill, ttft_quantile_ms
from opscale.policy.types import (
    SLO,
    Infeasibility,
    InfeasibilityKind,
    Limits,
    LoadWindow,
    PoolKey,
    PoolPlan,
    Prediction,
    plan_gpus,
)

NO_LIMITS = Limits()


def _settle(plan: Callable[[float], StagePlan], units: Sequence[Unit]) -> StagePlan:
    """Plan assuming every attention↔FFN pair shares a node; if the plan's own pairs cannot
    (``node_share``: the stage spans nodes, or its replicas are too big to sit side by side), re-plan
    with the hand-offs that share implies — at most a few rounds, each assuming a smaller share; a plan
    whose pairs sit at least as well as it assumed is priced no better than it will run, and is kept."""
    sp = plan(1.0)
    if len(units) <= 1:
        return sp
    assumed = 1.0
    for _ in range(3):
        share = node_share(units, sp.chosen)
        if share >= assumed - 1e-9:
            break
        assumed = share
        sp = plan(share)
    if assumed < 1.0:
        said = (
            f"{sp.stage}: {100 * assumed:.0f}% of the attention↔FFN replica pairs can share a node (for the "
            f"stage's size and its replicas' sizes); the others hand off over the network, priced so."
        )
        sp = replace(sp, notes=[*sp.notes, said])
    return sp


def budget_for(slo: SLO, stage: str) -> float:
    return slo.ttft_ms if stage == "prefill" else slo.tbt_ms


@dataclass(frozen=True, slots=True)
class Plan:
    pools: dict[PoolKey, PoolPlan]
    prediction: Prediction
    reasons: list[str]
    infeasible: list[Infeasibility]
    stages: tuple[StagePlan, ...]
    units: Mapping[PoolKey, Unit] = field(default_factory=dict)
    loads: StageLoads | None = None
    forms: dict[str, str] = field(default_factory=dict)  # stage -> "model" | "operator" (hybrid plans)
    better_since: dict[str, float] = field(default_factory=dict)  # hybrid: the other form cheaper since
    retired: set[PoolKey] = field(default_factory=set)  # hybrid: pools of a form left (no scale-in window)


def plan_stage(
    perf: PerfModel,
    loads: StageLoads,
    slo: SLO,
    stage: str,
    units: Sequence[Unit],
    limits: Limits,
    batches: Sequence[int],
    floors: Mapping[PoolKey, int] | None = None,
    search: str = "exact",
    micro: Sequence[int] = (1,),
    shapes: Mapping[PoolKey, Shape] | None = None,
) -> StagePlan:
    """One stage's fewest-GPU plan for its pools ``units``, settled for where its replicas can sit;
    ``micro``: decode micro-batch counts to try (``planner_decode``); ``shapes``: the replica shapes to
    keep (only the replica counts free)."""
    if stage == "prefill":
        sp = _settle(
            lambda g: plan_prefill(
                perf, units, loads.prefill, slo.ttft_ms, limits, floors, search, g, shapes
            ),
            units,
        )
    else:
        sp = _settle(
            lambda g: plan_decode(
                perf, units, loads.decode, slo.tbt_ms, batches, limits, floors, search, g, micro, shapes
            ),
            units,
        )
    return _within_max(sp, limits)


def _within_max(sp: StagePlan, limits: Limits) -> StagePlan:
    """A pool whose ``max_replicas`` is below the one replica every stage needs (0: switched off) gets
    that many, and the stage cannot serve: said, never planned past the limit."""
    capped = {
        pool: o
        for pool, o in sp.chosen.items()
        if (hi := limits.for_pool(pool).max_replicas) is not None and o.replicas > hi
    }
    if not capped:
        return sp
    chosen = dict(sp.chosen)
    problems = list(sp.infeasible)
    for pool, o in capped.items():
        hi = limits.for_pool(pool).max_replicas or 0
        chosen[pool] = replace(o, replicas=hi, cost=hi * o.gpus)
        problems.append(
            Infeasibility(
                InfeasibilityKind.ABOVE_MAX_REPLICAS,
                f"{pool}: the stage needs at least {o.replicas} replicas of it, above max_replicas {hi}.",
                pool=pool,
                needed=o.replicas,
                allowed=hi,
            )
        )
    return replace(sp, chosen=chosen, latency_ms=math.inf, met=False, infeasible=problems)


def plan_stages(
    perf: PerfModel,
    load: LoadWindow,
    slo: SLO,
    units: Mapping[str, Sequence[Unit]],
    limits: Limits,
    batches: Sequence[int],
    floors: Mapping[str, Mapping[PoolKey, int]] | None = None,
    search: str = "exact",
) -> tuple[StageLoads, StagePlan, StagePlan]:
    loads = stage_loads(perf, load, slo)
    floors = floors or {}
    pre, dec = (
        plan_stage(perf, loads, slo, st, units[st], limits, batches, floors.get(st), search)
        for st in ("prefill", "decode")
    )
    return loads, pre, dec


def assemble(
    perf: PerfModel,
    loads: StageLoads,
    stages: Sequence[StagePlan],
    units: Mapping[PoolKey, Unit],
    slo: SLO,
    header: str,
) -> Plan:
    pools: dict[PoolKey, PoolPlan] = {}
    reasons = [header]
    watts_total = 0.0
    latency: dict[str, float] = {}
    infeasible: list[Infeasibility] = []
    tag = f"p{slo.percentile:g}"
    if loads.unservable > 0.0:
        msg = (
            f"{100 * loads.unservable:.2f}% of requests cannot meet the SLO on any configuration (a prompt "
            f"whose prefill alone on a whole 8-GPU replica exceeds TTFT {slo.ttft_ms:g} ms, or a request "
            f"whose KV fits no replica); the {tag} is planned over the rest."
        )
        reasons.append(msg)
        infeasible.append(Infeasibility(InfeasibilityKind.UNSERVABLE_REQUESTS, msg))
    for sp in stages:
        length = loads.decode.kv_len if sp.stage == "decode" else max(1, round(loads.prefill.mean_length))
        for pool, opt in sp.chosen.items():
            finite = math.isfinite(opt.latency_ms)
            w = option_watts(perf, units[pool], opt, length) if finite else None
            lat = opt.latency_ms if finite else None
            pools[pool] = PoolPlan.sized(opt.replicas, opt.batch, opt.gpus, lat, w, sp.micro)
            watts_total += w or 0.0
            reasons.append(describe(pool, opt, slo.percentile))
        latency[sp.stage] = sp.latency_ms
        label = "TTFT" if sp.stage == "prefill" else "TBT (per request)"
        verdict = "meets" if sp.met else "MISSES"
        shown = f"{sp.latency_ms:.1f} ms" if math.isfinite(sp.latency_ms) else "unbounded"
        reasons.append(
            f"{sp.stage}: {label} {tag} predicted {shown} {verdict} the {sp.budget_ms:g} ms SLO with "
            f"{sp.gpus:g} GPUs."
        )
        reasons.extend(sp.notes)
        infeasible.extend(sp.infeasible)
    pred = Prediction(
        ttft_ms=_finite(latency.get("prefill")),
        tbt_ms=_finite(latency.get("decode")),
        gpus=plan_gpus(pools.values()),
        watts=watts_total,
        unservable_fraction=loads.unservable,
    )
    return Plan(pools, pred, reasons, infeasible, tuple(stages), dict(units), loads)


def predict(perf: PerfModel, plan: Plan, load: LoadWindow, slo: SLO) -> tuple[float, float]:
    """(p TTFT, p per-request TBT) in ms that the planner's model gives ``plan``'s pools, held as they are,
    at ``load`` — the prediction the plan carries, for another window (``inf``: a pool cannot keep up).
    The prefill stage is priced at the measured rate, as the plan's own prediction is."""
    loads = stage_loads(perf, load, slo)
    out = {"prefill": math.inf, "decode": math.inf}
    for sp in plan.stages:
        units = [plan.units[pool] for pool in sp.chosen]
        path = [(u, sp.chosen[u.pool]) for u in units]
        hop = hop_model(perf, units, node_share(units, sp.chosen))  # as placement will keep its pairs
        if sp.stage == "prefill":
            out["prefill"] = ttft_quantile_ms(perf, path, loads.prefill, hop)
        else:
            out["decode"] = tbt_quantile_ms(perf, path, loads.decode, hop, sp.micro)[0]
    return out["prefill"], out["decode"]


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
