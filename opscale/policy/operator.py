"""``operator``: the OpScale planner — per stage, whole-model replicas or per-operator pools, whichever
needs fewer GPUs (``opscale.policy.hybrid``), each sized at the fewest GPUs meeting the SLO.

Per operator pool (``prefill/attention``, ``decode/ffn``, …) the planner chooses GPUs per replica,
replicas and (decode) the pass size so that the stage meets its SLO at its percentile with the fewest
GPUs. Prefill: each pool is a GI/G/R queue of prompts priced per prompt length, and the TTFT percentile
is that of the whole path (``planner_prefill``). Decode: the pools step the resident sequences of
continuous batching, sized by Little's law with their KV at a quantile (``planner_decode``); a token
round crosses every pool and the activation hand-offs between them. ``planner_core`` holds the exact
fewest-GPU combination of one option per pool; the paper's greedy is ``search="greedy"``. The whole-model
form of a stage is planned exactly as the ``model`` policy plans it.

``forms``: ``hybrid`` (default) chooses per stage; ``operator`` plans operator pools only (for
comparison, and what ``plan_operator`` returns).

Cadence: the policy ticks every second, but a stage that runs whole-model replicas keeps each decision
for the model-level policy's 20 s slot (``opscale.policy.cadence``, with the measurement).

Floor: ``floor_fraction`` f keeps, in every operator pool of a stage, at least ⌈f × N⌉ replicas, where
N is the number of whole-model replicas the whole-model form needs for that stage at this load — a
base of whole-model capacity, as OpScale keeps, so a burst never finds a pool at its bare minimum.

Colocated mode (``serving/<operator>`` pools doing both stages) is planned by
``opscale.policy.planner_colocated``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from opscale.model import PerfModel
from opscale.policy.adaptive import FORMS, Correction
from opscale.policy.cadence import WHOLE_MODEL_INTERVAL_S, hold_whole_stages
from opscale.policy.hybrid import (
    FormChoice,
    choose_form,
    form_units,
    forms_in_force,
    hold_old_form,
    hold_shapes,
    idle_pools,
    operator_units,
    same_shapes,
    shapes_in_force,
)
from opscale.policy.jsonval import JSONValue
from opscale.policy.pipeline import own_data
from opscale.policy.planner_core import StagePlan, batch_candidates
from opscale.policy.planner_loads import StageLoads, stage_loads
from opscale.policy.planner_policy import REQUIRED, STAGES, PlannerParams, PlannerPolicy, planner_params
from opscale.policy.planner_stage import NO_LIMITS, Plan, assemble, plan_stage
from opscale.policy.registry import Built, PolicyDescriptor, stages_of
from opscale.policy.types import SLO, Limits, LoadWindow, PolicyInput, PolicyOutput, PoolKey, PoolPlan

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec

__all__ = ["OperatorPolicy", "operator_units", "plan_hybrid", "plan_operator"]


class OperatorParams(PlannerParams):
    floor_fraction: float = Field(0.0, ge=0.0, le=1.0)
    search: Literal["exact", "greedy"] = "exact"  # greedy: the paper's, kept for comparison
    forms: Literal["hybrid", "operator"] = "hybrid"
    decode_overlap: Literal["pingpong", "sequential"] = "pingpong"
    forecast: bool = True
    correction: bool = True


MICRO_BATCHES = (1, 2, 4)  # micro-batch counts the ping-pong decode plan may choose


def plan_hybrid(
    perf: PerfModel,
    load: LoadWindow,
    slo: SLO,
    limits: Limits = NO_LIMITS,
    *,
    max_batch_size: int = 256,
    floor_fraction: float = 0.0,
    search: str = "exact",
    forms: str = "hybrid",
    current: Mapping[str, str] | None = None,
    decode_overlap: str = "pingpong",
    better_since: Mapping[str, float] | None = None,
    now_s: float | None = None,
    correction: Correction | None = None,
    in_force: Mapping[PoolKey, PoolPlan] | None = None,
) -> Plan:
    """The ``operator`` policy's raw plan (before the stabilizer); pure, exposed for tests and what-if.
    ``current``, ``better_since``, ``now_s``: the form each stage runs now, when the other became
    cheaper, and this tick's time (hysteresis, ``opscale.policy.hybrid``); ``correction``: the closed-loop
    factors, per stage and form (each form is planned against the SLO its own factor gives);
    ``in_force``: the pools in force, whose replica shapes a form keeps unless new ones save enough
    (``hold_shapes``)."""
    batches = batch_candidates(max_batch_size)
    corr = correction or Correction()
    loads = stage_loads(perf, load, corr.slo(slo, current or {}))
    tried = FORMS if forms == "hybrid" else ("operator",)
    micro: tuple[int, ...] = MICRO_BATCHES if decode_overlap == "pingpong" else (1,)
    choices: dict[str, FormChoice] = {}
    notes: list[str] = []
    ctx = _Ctx(perf, loads, slo, corr, limits, batches, search, in_force or {})
    for st in STAGES:
        plans: dict[str, StagePlan] = {}
        floors: dict[PoolKey, int] = {}
        if "model" in tried or floor_fraction > 0.0:
            whole = _form_plan(ctx, st, "model", {}, (1,), notes)
            plans["model"] = whole
            if floor_fraction > 0.0:
                n = whole.chosen[PoolKey(st, "model")].replicas
                keep = math.ceil(floor_fraction * n - 1e-9)
                floors = {u.pool: keep for u in operator_units(perf, st)}
                notes.append(
                    f"{st}: floor keeps {keep} replicas per operator pool (⌈{floor_fraction:g} × {n} "
                    f"whole-model replicas⌉)."
                )
        plans["operator"] = _form_plan(ctx, st, "operator", floors, micro, notes)
        if forms == "hybrid":
            since = (better_since or {}).get(st)
            choices[st] = choose_form(st, plans, (current or {}).get(st), since, now_s)
        else:
            only = {"operator": plans["operator"]}
            choices[st] = FormChoice(st, "operator", only, f"{st}: operator pools (forms=operator).")
    units = {u.pool: u for st in STAGES for f in choices[st].plans for u in form_units(perf, st, f)}
    header = (
        f"operator plan for {load.arrival_rate_rps:.4g} req/s, {load.input_tokens_mean:.0f} in / "
        f"{load.output_tokens_mean:.0f} out tokens (means) on {perf.gpu.key}: per stage, whole-model "
        f"replicas or operator pools, whichever meets the SLO with fewer GPUs."
    )
    planned_slo = corr.slo(slo, {st: ch.form for st, ch in choices.items()})
    plan = assemble(perf, loads, [choices[st].plan for st in STAGES], units, planned_slo, header)
    plan.reasons[1:1] = [c.reason for c in choices.values()]
    plan.reasons.extend(notes)
    for pool, n in idle_pools(perf, choices, limits).items():
        plan.pools[pool] = PoolPlan(n)
    plan.forms.update({st: c.form for st, c in choices.items()})
    plan.better_since.update({st: c.better_since for st, c in choices.items() if c.better_since is not None})
    return plan


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every stage and form of one plan_hybrid call is planned with."""

    perf: PerfModel
    loads: StageLoads
    slo: SLO
    corr: Correction
    limits: Limits
    batches: tuple[int, ...]
    search: str
    in_force: Mapping[PoolKey, PoolPlan]


def _form_plan(
    c: _Ctx, st: str, form: str, floors: Mapping[PoolKey, int], micro: tuple[int, ...], notes: list[str]
) -> StagePlan:
    """One form of one stage, against the SLO its correction gives, keeping the replica shapes in force
    unless new ones save enough (``hold_shapes``)."""
    units, slo = form_units(c.perf, st, form), c.corr.slo(c.slo, {st: form})
    args = (c.perf, c.loads, slo, st, units, c.limits, c.batches, floors, c.search, micro)
    new = plan_stage(*args)
    shapes = shapes_in_force(units, c.in_force)
    if shapes is None or same_shapes(new, shapes):
        return new
    sp, note = hold_shapes(st, form, new, plan_stage(*args, shapes))
    if note:
        notes.append(note)
    return sp


def plan_operator(
    perf: PerfModel,
    load: LoadWindow,
    slo: SLO,
    limits: Limits = NO_LIMITS,
    *,
    max_batch_size: int = 256,
    floor_fraction: float = 0.0,
    search: str = "exact",
    decode_overlap: str = "pingpong",
) -> Plan:
    """Operator pools in every stage (no whole-model form): the per-operator layout on its own."""
    return plan_hybrid(
        perf,
        load,
        slo,
        limits,
        max_batch_size=max_batch_size,
        floor_fraction=floor_fraction,
        search=search,
        forms="operator",
        decode_overlap=decode_overlap,
    )


def _forms_of(data: Mapping[str, JSONValue]) -> dict[str, str]:
    raw = data.get("forms", {})
    if not isinstance(raw, dict):
        return {}
    return {st: str(f) for st, f in raw.items() if st in STAGES and f in FORMS}


def _since_of(data: Mapping[str, JSONValue]) -> dict[str, float]:
    raw = data.get("better_since", {})
    if not isinstance(raw, dict):
        return {}
    return {
        st: float(t)
        for st, t in raw.items()
        if st in STAGES and isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
    }


def _switched_of(data: Mapping[str, JSONValue]) -> dict[str, tuple[float, str]]:
    raw = data.get("switched", {})
    if not isinstance(raw, dict):
        return {}
    out = {}
    for st, v in raw.items():
        if st in STAGES and isinstance(v, list) and len(v) == 2 and v[1] in FORMS:
            t = v[0]
            if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t):
                out[st] = (float(t), str(v[1]))
    return out


class OperatorPolicy(PlannerPolicy):
    name: ClassVar[str] = "operator"
    params_type: ClassVar[type[PlannerParams]] = OperatorParams

    def _plan(
        self,
        load: LoadWindow,
        slo: SLO,
        limits: Limits,
        current: Mapping[str, str],
        better_since: Mapping[str, float] | None = None,
        now_s: float | None = None,
        correction: Correction | None = None,
        in_force: Mapping[PoolKey, PoolPlan] | None = None,
    ) -> Plan:
        p = self.params
        assert isinstance(p, OperatorParams)
        return plan_hybrid(
            self.perf,
            load,
            slo,
            limits,
            correction=correction,
            in_force=in_force,
            max_batch_size=p.max_batch_size,
            floor_fraction=p.floor_fraction,
            search=p.search,
            forms=p.forms,
            current=current,
            decode_overlap=p.decode_overlap,
            better_since=better_since,
            now_s=now_s,
        )

    def plan(self, load: LoadWindow, slo: SLO, limits: Limits) -> Plan:
        return self._plan(load, slo, limits, {})

    def decide(self, inp: PolicyInput) -> PolicyOutput:
        """Every tick; whole-model stages keep the model-level cadence (``opscale.policy.cadence``)."""
        out = super().decide(inp)
        if self.params.mode == "colocated":
            return out
        staleness = self.stabilizer_defaults.resolve(inp.limits).max_staleness_s
        interval = max(WHOLE_MODEL_INTERVAL_S, self.params.interval_s)
        data = own_data(inp, self.name)
        return hold_whole_stages(inp, out, data, REQUIRED, staleness, interval, self.params.forecast)

    def plan_tick(
        self,
        inp: PolicyInput,
        load: LoadWindow,
        slo: SLO,
        data: Mapping[str, JSONValue],
        correction: Correction,
    ) -> tuple[Plan, dict[str, JSONValue]]:
        before = _forms_of(data) or forms_in_force(inp.current)
        plan = self._plan(load, slo, inp.limits, before, _since_of(data), inp.now_s, correction, inp.current)
        switched = hold_old_form(self.perf, plan, before, _switched_of(data), inp.current, inp.now_s)
        own: dict[str, JSONValue] = {
            "forms": dict(plan.forms),
            "better_since": dict(plan.better_since),
            "switched": {st: [t, f] for st, (t, f) in switched.items()},
        }
        return plan, own

    def colocated_pools(self) -> list[tuple[PoolKey, tuple[str, ...]]]:
        # The floor is not applied in colocated mode (it is defined per stage).
        return [(PoolKey("serving", s.kind.value), (s.kind.value,)) for s in self.perf.operators("decode")]


# --- registration ----------------------------------------------------------------------------------


class OperatorSpecParams(BaseModel):
    """Parameters of the `operator` policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    floor_fraction: float = Field(0.0, ge=0, le=1, description="share of whole-model capacity kept, [0, 1]")
    max_batch_size: int = Field(256, ge=1, le=65_536, description="in [1, 65536]")
    forms: Literal["hybrid", "operator"] = Field(
        "hybrid", description="hybrid: per stage whole-model or operator pools; operator: pools only"
    )
    decode_overlap: Literal["pingpong", "sequential"] = Field(
        "pingpong", description="decode operator pools: ping-pong micro-batches, or one pass after another"
    )
    forecast: bool = Field(True, description="plan for the load forecast over replica start-up")
    correction: bool = Field(True, description="correct the latency model by the observed p99s")
    startup_s: float | None = Field(None, gt=0, le=3600, description="measured replica start-up, seconds")
    headroom: float = Field(0.0, ge=0, le=4, description="plan for the load × (1 + headroom), [0, 4]")


def _build(spec: DeploymentSpec, given: OperatorSpecParams | None) -> Built:
    perf, params = planner_params(spec)
    if given is not None:
        params.update(given.model_dump())
    stages = stages_of(spec)
    pools = tuple(
        PoolKey(s, op.kind.value) for s in stages for op in perf.operators("prefill" if s == "serving" else s)
    )
    if "serving" not in stages:
        pools = (*pools, *(PoolKey(s, "model") for s in stages))
    return Built(OperatorPolicy.from_params(params, perf), pools, frozenset(REQUIRED), params)


DESCRIPTOR = PolicyDescriptor(
    name=OperatorPolicy.name,
    summary="OpScale: per stage, whole-model replicas or operator pools, whichever needs fewer GPUs",
    build=_build,
    params=OperatorSpecParams,
)
