"""The policy shell around the planners: parameters, the performance model, ``decide`` and the
stabilizer. ``operator`` and ``model_level`` differ only in their units and ``plan``.

Parameters (``from_params``): ``model`` (a preset name; the spec adapter passes a ``PerfModel`` built
from the spec's shape instead), ``gpu_type``, ``mode``, ``max_batch_size``, ``interval_s`` and the
stabilizer defaults. ``PolicyInput.params`` is not read: everything deployment-specific is fixed when
the policy is built, once per spec version.

Colocated mode (``serving/…`` pools doing both stages) is planned by ``planner_colocated``; a
subclass says which pools and operators with ``colocated_pools``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from opscale.errors import InvalidArgument
from opscale.model import PerfModel, get_preset, perf_model
from opscale.policy.adaptive import (
    WHOLE,
    Correction,
    corrected,
    correction_sentence,
    covered_rps,
    forecast,
    forecast_load,
    history_of,
    horizon_s,
    prediction_record,
    scaled,
)
from opscale.policy.decode_step import holder
from opscale.policy.jsonval import JSONValue
from opscale.policy.length_pool import LENGTH_MEMORY_S, pooled_lengths
from opscale.policy.pipeline import finish, own_data, parse_params
from opscale.policy.planner_colocated import CoPlan, plan_colocated, stage_work
from opscale.policy.planner_core import memory
from opscale.policy.planner_stage import Plan
from opscale.policy.recent import with_recent
from opscale.policy.registry import base_params
from opscale.policy.stabilizer import StabilizerConfig
from opscale.policy.types import (
    SLO,
    Infeasibility,
    Limits,
    LoadWindow,
    PolicyInput,
    PolicyOutput,
    PoolKey,
    PoolPlan,
    Prediction,
    Signal,
)

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec

STAGES = ("prefill", "decode")
REQUIRED = (Signal.ARRIVAL_RATE, Signal.TOKEN_LENGTHS)


class PlannerParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="model preset, when no PerfModel is handed in")
    gpu_type: str = "H100"
    mode: Literal["disaggregated", "colocated"] = "disaggregated"
    max_batch_size: int = Field(256, ge=1, le=65_536)
    interval_s: float = Field(1.0, gt=0)
    scale_down_window_s: float = Field(30.0, ge=0)
    max_staleness_s: float = Field(10.0, gt=0)
    # opscale.policy.adaptive: plan for the load forecast over replica start-up, and correct the latency
    # model by the observed p99s. Off in the base (the model-level baseline runs without them).
    forecast: bool = False
    correction: bool = False
    startup_s: float | None = Field(None, gt=0, le=3600, description="measured replica start-up, seconds")
    headroom: float = Field(0.0, ge=0.0, le=4.0)  # plan for the load × (1 + headroom)
    # opscale.policy.adaptive: the time constant over which length distributions are pooled (0: the
    # window's own). On in the base: both planners see the same lengths.
    length_memory_s: float = Field(LENGTH_MEMORY_S, ge=0.0, le=86_400.0)


class PlannerPolicy(ABC):
    """Base of the two planning policies; subclasses set ``name``, ``params_type`` and ``plan``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    params_type: ClassVar[type[PlannerParams]] = PlannerParams

    def __init__(self, params: PlannerParams, perf: PerfModel | None = None) -> None:
        if perf is None:
            if params.model is None:
                raise InvalidArgument(
                    f"the {self.name} policy needs a model preset (params.model) or a performance model",
                    field="model",
                )
            perf = perf_model(get_preset(params.model), params.gpu_type)
        self.params = params
        self.perf = perf
        self.stabilizer_defaults = StabilizerConfig(
            scale_down_window_s=params.scale_down_window_s, max_staleness_s=params.max_staleness_s
        )

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None, perf: PerfModel | None = None) -> Self:
        return cls(parse_params(cls.params_type, params, cls.name), perf)

    @property
    def interval_s(self) -> float:
        return self.params.interval_s

    @abstractmethod
    def plan(self, load: LoadWindow, slo: SLO, limits: Limits) -> Plan: ...

    @abstractmethod
    def colocated_pools(self) -> list[tuple[PoolKey, tuple[str, ...]]]: ...

    def plan_colocated(self, load: LoadWindow, slo: SLO, limits: Limits) -> CoPlan:
        return plan_colocated(
            self.perf,
            self.colocated_pools(),
            stage_work(load, "prefill"),
            stage_work(load, "decode"),
            slo,
            limits,
            self.params.max_batch_size,
        )

    def plan_tick(
        self,
        inp: PolicyInput,
        load: LoadWindow,
        slo: SLO,
        data: Mapping[str, JSONValue],
        correction: Correction,
    ) -> tuple[Plan, dict[str, JSONValue]]:
        """This tick's raw plan for ``load`` (after the forecast) against ``slo`` corrected by
        ``correction`` for the forms it plans, and the policy's own state to keep (subclasses add theirs)."""
        return self.plan(load, correction.slo(slo), inp.limits), {}

    def decide(self, inp: PolicyInput) -> PolicyOutput:
        plan: Plan | CoPlan
        if self.params.mode == "colocated":
            plan = self.plan_colocated(inp.load, inp.slo, inp.limits)
            return self._finish(inp, plan.pools, plan.reasons, plan.infeasible, plan.prediction, {})
        p, data = self.params, own_data(inp, self.name)
        load, slo, notes, keep = inp.load, inp.slo, [], dict[str, JSONValue]()
        if p.length_memory_s > 0.0:
            load, pooled = pooled_lengths(data, load, inp.now_s, p.length_memory_s)
            if pooled:
                keep["lengths"] = pooled
        if p.headroom > 0.0:
            load = scaled(load, 1.0 + p.headroom)
            notes.append(f"headroom: planned for {1.0 + p.headroom:g} × the observed load.")
        if p.forecast and load.arrival_rate_rps > 0.0:
            hist = history_of(data, inp.now_s, load.arrival_rate_rps)
            fc = forecast(hist, p.startup_s or horizon_s(self.perf, inp.current), inp.load.window_s)
            fc = with_recent(fc, inp.load, 1.0 + p.headroom)
            load = forecast_load(load, fc)
            keep["rates"] = [[t, r] for t, r in hist]
            if fc.rate_rps > inp.load.arrival_rate_rps * 1.005:
                notes.append(fc.sentence(inp.load.arrival_rate_rps))
        keep["planned_rps"] = covered_rps(load)  # the rate this tick plans for (opscale.policy.cadence)
        c = Correction()
        if p.correction:
            settle = inp.load.window_s + horizon_s(self.perf, inp.current)
            c = corrected(data, inp.load, inp.now_s, settle, inp.slo)
            keep["correction"] = c.to_json()
        plan, own = self.plan_tick(inp, load, slo, data, c)
        keep.update(own)
        forms = plan.forms or WHOLE
        if p.correction:
            said = correction_sentence(c, inp.slo, forms)
            if said:
                notes.append(said)
        pred = plan.prediction
        short = kv_short(self.perf, plan, inp.current)
        if short:
            keep["upsized"] = [str(pool) for pool in sorted(short)]
        out = self._finish(
            inp,
            plan.pools,
            [*plan.reasons, *notes, *short.values()],
            plan.infeasible,
            pred,
            keep,
            frozenset(plan.retired),
            frozenset(short),
        )
        if p.correction and all(out.desired[k].replicas == v.replicas for k, v in plan.pools.items()):
            # the plan goes in force as planned: a later window that saw only it judges this prediction
            keep["predicted"] = prediction_record(
                data, out.desired, load, pred, inp.now_s, forms, inp.slo.quantile
            )
            out = replace(out, state=replace(out.state, data=keep))
        return out

    def _finish(
        self,
        inp: PolicyInput,
        pools: Mapping[PoolKey, PoolPlan],
        reasons: list[str],
        infeasible: Sequence[Infeasibility],
        predicted: Prediction,
        data: Mapping[str, JSONValue],
        retired: frozenset[PoolKey] = frozenset(),
        upsized: frozenset[PoolKey] = frozenset(),
    ) -> PolicyOutput:
        return finish(
            inp,
            policy=self.name,
            raw_plans=pools,
            reasons=reasons,
            defaults=self.stabilizer_defaults,
            required=REQUIRED,
            infeasible=infeasible,
            predicted=predicted,
            data=data,
            retired=retired,
            upsized=upsized,
        )


def kv_short(perf: PerfModel, plan: Plan, current: Mapping[PoolKey, PoolPlan]) -> dict[PoolKey, str]:
    """The KV-holding pools whose change of replica size the plan makes for KV memory: the replicas in
    force hold less than the resident KV the plan sizes the stage for, and the planned replicas hold it.
    The stabilizer weighs such a change as a scale-up whatever the GPUs (``opscale.policy.pipeline``).
    Per pool, the sentence that says so."""
    out: dict[PoolKey, str] = {}
    for sp in plan.stages:
        for pool in sp.chosen:
            unit, cur, new = plan.units.get(pool), current.get(pool), plan.pools.get(pool)
            if unit is None or cur is None or new is None or not holder(unit) or not cur.replicas:
                continue
            if math.isclose(cur.gpus, new.gpus):
                continue
            batch = new.batch_size or 1
            have = cur.replicas * memory(perf, unit, cur.batch_size or batch, cur.gpus).kv_tokens()
            hold = new.replicas * memory(perf, unit, batch, new.gpus).kv_tokens()
            if have < sp.kv_tokens <= hold:
                out[pool] = (
                    f"{pool}: the {cur.replicas} × {cur.gpus:g} GPU in force hold {have:,.0f} tokens of KV, "
                    f"the planned {new.replicas} × {new.gpus:g} GPU {hold:,.0f}, for {sp.kv_tokens:,.0f} "
                    "resident at the quantile: the change of size is a scale-up, whatever the GPUs."
                )
    return out


# --- registration (shared by the operator and model descriptors) ------------------------------------


def planner_params(spec: DeploymentSpec) -> tuple[PerfModel, dict[str, object]]:
    """The spec's shape on its GPU type, and the parameters both planners take from the spec; a shape
    without a usable profile is the caller's mistake (``InvalidArgument`` from ``perf_model``)."""
    perf = perf_model(spec.model.shape(), spec.gpu_type)
    params = base_params(spec) | {
        "model": spec.model.preset,
        "gpu_type": spec.gpu_type,
        "mode": spec.mode.value,
    }
    return perf, params
