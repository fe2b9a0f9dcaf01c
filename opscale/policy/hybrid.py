"""Hybrid granularity: per stage, the ``operator`` policy plans both forms — whole-model replicas and
per-operator pools — with the same loads, models and search, and runs the one needing fewer GPUs.

Why both. Operator pools pay for their granularity: every pool has at least one replica, each
replica crosses 2 hand-offs per layer, and a prompt queues at every pool. Where a whole replica is
already as small as the largest operator pool (a 7B model on one GPU, or an MoE whose experts alone
need the GPUs of a whole replica), per-operator scaling cannot save a GPU; where one operator is the
bottleneck of a large model (decode attention holding the KV of many sequences beside a 70B model's
FFN), it can. Planning both and taking the cheaper means ``operator`` never plans more GPUs than
``model`` for the same load under the same model: the form is a per-stage decision, like the pool
sizes, and ``explain`` says which form each stage runs and what the other would have cost.

Whole GPUs decide. The forms are compared by the GPUs each stage takes on its own, its shared replicas
packed onto ⌈Σ shares⌉ GPUs (``StagePlan.whole_gpus``), and a tie goes to whole-model replicas. The
search inside the operator form still counts shares (they decide which pool gets how much of a GPU),
but operator pools at 0.625 of a GPU against one whole-model replica on 1 GPU save nothing a fleet can
release, while they add hand-offs, a queue per pool and interference the model prices only
approximately: in the simulator such a stage (qwen2-7b, Azure conv ×4) held 5–6 GPUs where one
whole-model replica per stage served the load with 2.

Hysteresis. A stage that runs one form changes to the other only when that saves at least
``max(1 GPU, SWITCH_GAIN × current)`` for ``FORM_WINDOW_S`` without a break, or at once when the
current form cannot meet the SLO and the other can: a switch starts a whole set of new replicas, and
the old form's pools keep theirs until the new ones have started (make before break, ``hold_old_form``);
then they are retired at once (the stabilizer skips its scale-in window for them). Near a whole
replica's step (4 → 8 GPUs) the cheaper form changes with every wobble of the load; without the dwell
the stage would flap between forms and pay for both. The form in force and when the other became
cheaper are kept in the policy's state (``forms``, ``better_since``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from opscale.model import PerfModel
from opscale.policy.adaptive import FORMS, form_name, horizon_s
from opscale.policy.planner_core import Shape, StagePlan, Unit
from opscale.policy.types import Limits, PoolKey, PoolPlan

if TYPE_CHECKING:
    from opscale.policy.planner_stage import Plan

SWITCH_GAIN = 0.1
FORM_WINDOW_S = 60.0
HOLD_MARGIN_S = 5.0


def operator_units(perf: PerfModel, stage: str) -> tuple[Unit, ...]:
    return tuple(
        Unit(PoolKey(stage, spec.kind.value), stage, (spec.kind.value,)) for spec in perf.operators(stage)
    )


def whole_model_unit(perf: PerfModel, stage: str) -> Unit:
    return Unit(PoolKey(stage, "model"), stage, tuple(spec.kind.value for spec in perf.operators(stage)))


def form_units(perf: PerfModel, stage: str, form: str) -> tuple[Unit, ...]:
    return (whole_model_unit(perf, stage),) if form == "model" else operator_units(perf, stage)


@dataclass(frozen=True, slots=True)
class FormChoice:
    stage: str
    form: str
    plans: Mapping[str, StagePlan]  # both forms' plans, by form
    reason: str
    better_since: float | None = None  # when the form not run became worth a switch (kept in the state)

    @property
    def plan(self) -> StagePlan:
        return self.plans[self.form]


def _score(sp: StagePlan) -> tuple[int, float]:
    """Meeting the SLO first, then fewest GPUs; among plans that miss, the smaller overshoot."""
    if sp.met:
        return (0, float(sp.whole_gpus))
    over = sp.latency_ms / sp.budget_ms if math.isfinite(sp.latency_ms) else math.inf
    return (1, over)


def choose_form(
    stage: str,
    plans: Mapping[str, StagePlan],
    current: str | None,
    better_since: float | None = None,
    now_s: float | None = None,
) -> FormChoice:
    """The form a stage runs (module docstring: cheapest, with hysteresis toward ``current``).
    ``better_since``: when the other form became worth a switch (``None``: it is not); ``now_s``: this
    tick's time (``None``: a one-off plan, no dwell)."""
    best = min(FORMS, key=lambda f: (*_score(plans[f]), f != "model"))
    other = "operator" if best == "model" else "model"
    b, o = plans[best], plans[other]
    if current is not None and current in plans and current != best:
        cur = plans[current]
        gain = cur.whole_gpus - b.whole_gpus
        if cur.met and gain < max(1.0, SWITCH_GAIN * cur.whole_gpus):
            reason = (
                f"{stage}: keeps the {form_name(current)} form ({_gpus(cur)}); the {form_name(best)} form "
                f"({_gpus(b)}) would save less than max(1 GPU, {SWITCH_GAIN:.0%}), not worth a switch."
            )
            return FormChoice(stage, current, plans, reason)
        if cur.met and now_s is not None:
            since = now_s if better_since is None else better_since
            if now_s - since < FORM_WINDOW_S:
                reason = (
                    f"{stage}: keeps the {form_name(current)} form ({_gpus(cur)}) for now; the "
                    f"{form_name(best)} form ({_gpus(b)}) is cheaper since {now_s - since:.0f} s ago and "
                    f"takes over if it stays cheaper for {FORM_WINDOW_S:.0f} s."
                )
                return FormChoice(stage, current, plans, reason, since)
    if b.met and o.met:
        why = f"{_gpus(b)} against {_gpus(o)} for {form_name(other)}"
    elif b.met:
        why = f"{_gpus(b)}; the {form_name(other)} form cannot meet the SLO"
    else:
        why = "neither form meets the SLO; this one comes closest"
    switched = f" (switching from {form_name(current)})" if current in plans and current != best else ""
    return FormChoice(stage, best, plans, f"{stage}: runs as {form_name(best)}{switched}: {why}.")


def shapes_in_force(
    units: Sequence[Unit], in_force: Mapping[PoolKey, PoolPlan]
) -> dict[PoolKey, Shape] | None:
    """The replica shapes of a form's pools in force (None: the form does not run in full now). Their
    micro-batches are the most any of them runs, as the data plane runs a stage (``decode_plane``)."""
    out: dict[PoolKey, Shape] = {}
    for u in units:
        p = in_force.get(u.pool)
        if p is None or p.replicas <= 0 or not p.batch_size:
            return None
        out[u.pool] = Shape(p.gpus, p.batch_size, p.micro_batches)
    micro = max(s.micro for s in out.values())
    return {k: replace(s, micro=micro) for k, s in out.items()}


def same_shapes(sp: StagePlan, shapes: Mapping[PoolKey, Shape]) -> bool:
    """Whether ``sp`` runs the shapes in force: GPUs per replica, and the pass size in decode (a prefill
    pass size follows from the prompts' lengths, so the pin in ``planner_prefill`` keeps GPUs only)."""
    return all(
        (o := sp.chosen.get(k)) is not None
        and o.gpus == s.gpus
        and (sp.stage == "prefill" or o.batch == s.batch)
        for k, s in shapes.items()
    ) and (sp.stage != "decode" or len(shapes) == 1 or sp.micro == next(iter(shapes.values())).micro)


def hold_shapes(stage: str, form: str, new: StagePlan, held: StagePlan) -> tuple[StagePlan, str | None]:
    """The stage's plan with the replica shapes in force (``held``, only replica counts re-planned), or
    ``new`` when its shapes are needed (``held`` misses the SLO) or save at least max(1 GPU, 10%).
    Without this a stage's shape flips between near-equal optima from one tick to the next (attention
    3 × 1 GPU with experts on 4, then 1 × 2 GPUs with experts on 8), every flip a new set of replicas
    started while the old ones drain, and the stabilizer's hold on replica counts mixes the two
    shapes: on mixtral-8x22b the fleet held ~28 GPUs where either plan needed ~16."""
    if not held.met:
        return new, None
    gain = held.whole_gpus - new.whole_gpus
    if new.met and gain >= max(1.0, SWITCH_GAIN * held.whole_gpus):
        return new, None
    return held, (
        f"{stage}: the {form_name(form)} keep their replica shapes ({_gpus(held)}); new shapes "
        f"({_gpus(new)}) would save less than max(1 GPU, {SWITCH_GAIN:.0%})."
    )


def _gpus(sp: StagePlan) -> str:
    n = sp.whole_gpus
    shares = f" ({sp.gpus:g} in shares)" if not math.isclose(sp.gpus, n) else ""
    return f"{n} GPU{'s' if n != 1 else ''}{shares}"


def idle_pools(perf: PerfModel, choices: Mapping[str, FormChoice], limits: Limits) -> dict[PoolKey, int]:
    """The pools of the form each stage does not run (of the forms it planned), at their floor
    (``min_replicas``, usually 0)."""
    out: dict[PoolKey, int] = {}
    for st, ch in choices.items():
        for form in ch.plans:
            if form != ch.form:
                for u in form_units(perf, st, form):
                    out[u.pool] = limits.for_pool(u.pool).min_replicas
    return out


def forms_in_force(current: Mapping[PoolKey, PoolPlan]) -> dict[str, str]:
    """The form each stage runs by the plan in force (a state lost or written by another policy)."""
    out: dict[str, str] = {}
    for pool, plan in current.items():
        if plan.replicas and pool.stage in ("prefill", "decode"):
            form = "model" if pool.operator == "model" else "operator"
            if out.get(pool.stage, form) == form:
                out[pool.stage] = form
    return out


def hold_old_form(
    perf: PerfModel,
    plan: Plan,
    before: Mapping[str, str],
    switched: Mapping[str, tuple[float, str]],
    current: Mapping[PoolKey, PoolPlan],
    now_s: float,
) -> dict[str, tuple[float, str]]:
    """Make before break: for ``HOLD_MARGIN_S`` past the start-up of the new form's largest replica after
    a stage switched form, its old form's pools keep the replicas in force, so requests have somewhere to
    go while the new replicas load. Past that, the pools of a form a stage does not run are retired
    (``plan.retired``: the stabilizer releases them without its scale-in window). Updates ``plan`` in
    place; returns the switches still held.

    The hold's clock starts when the new form is in force (each pool of it that the plan runs has
    replicas in the plan in force), not when the switch is planned: a switch the stabilizer does not
    act on starts no replica. mixtral-8x22b on Azure code: the plan switched decode to whole-model
    replicas in a lull, where fail-static held every count (no arrival for 85 s: stale signals); the
    hold ran out in the lull, and the first arrivals retired the operator pools at once with the whole
    replica not yet started (p99 time to the second token 10.2 s over that 450 s)."""
    held: dict[str, tuple[float, str]] = {}
    for st, form in plan.forms.items():
        prev = before.get(st)
        entry = (now_s, prev) if prev is not None and prev != form else switched.get(st)
        if entry is None or entry[1] == form:
            continue
        new_pools = {u.pool: plan.pools[u.pool] for u in form_units(perf, st, form) if u.pool in plan.pools}
        in_force = all(
            current.get(pool, PoolPlan(0)).replicas > 0 for pool, p in new_pools.items() if p.replicas > 0
        )
        if not in_force:
            entry = (now_s, entry[1])
        elif now_s - entry[0] >= horizon_s(perf, new_pools) + HOLD_MARGIN_S:
            continue
        held[st] = entry
        kept = []
        for u in form_units(perf, st, entry[1]):
            cur = current.get(u.pool)
            if cur is not None and cur.replicas > plan.pools.get(u.pool, PoolPlan(0)).replicas:
                plan.pools[u.pool] = cur
                kept.append(f"{u.pool} ×{cur.replicas}")
        if kept:
            plan.reasons.append(
                f"{st}: keeps {', '.join(kept)} of the {form_name(entry[1])} form until the new form's "
                f"replicas have started (make before break)."
            )
    plan.retired.update(
        u.pool
        for st, form in plan.forms.items()
        if st not in held
        for other in FORMS
        if other != form
        for u in form_units(perf, st, other)
    )
    return held
