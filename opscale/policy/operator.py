"""``operator``: the OpScale planner — each operator of each stage is its own pool, sized on its own.

Per operator pool (``prefill/attention``, ``decode/ffn``, …) the planner chooses batch size, GPUs per
replica and replicas so that the critical path meets the SLO at its percentile with the fewest GPUs:

    TTFT_p ≈ Σ_{prefill operators} (W_p + s)        TBT_p ≈ Σ_{decode operators} (W_p + s)

where s(b, g) is one batch pass through the operator's layers on a replica of g GPUs and W_p the
M/M/R waiting-time quantile of the pool, whose servers are replicas and whose jobs are batch passes:
prefill passes arrive at λ/b (λ prompts/s), decode passes at λ·n_out/b (one pass advances b sequences
one token), served at rate 1/s. ``opscale.policy.planner_core`` derives this and the search: per pool a
Pareto frontier of (GPUs, latency) over (batch, GPUs, replicas) — replicas start at the stability bound
⌊a⌋+1, GPUs per replica at the fewest that hold the weights plus, for attention, the KV cache of the
batch — and an exact fewest-GPU combination of one point per pool under the SLO. The paper's greedy
(add the replica with the best latency gain per GPU) approximates that combination and sometimes spends
a GPU more, or fewer at a higher load; ``search="greedy"`` runs it for comparison. The exact merge costs
about as much here and never returns a plan with a GPU to spare.

Floor: ``floor_fraction`` f keeps, in every operator pool of a stage, at least ⌈f × N⌉ replicas, where
N is the number of whole-model replicas the ``model`` planner would give that stage at this load — a
base of whole-model capacity, as OpScale keeps, so a burst never finds a pool at its bare minimum.

Colocated mode (``serving/<operator>`` pools doing both stages) is planned by
``opscale.policy.planner_colocated``: one M/M/R queue per pool for both kinds of pass, both SLOs at once.

Every pool plan carries its predicted latency at the percentile and its watts (idle plus busy power
weighted by utilization); the reasons say, per pool, replicas × GPUs, batch, ρ, the wait quantile and
the pass time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from opscale.model import PerfModel
from opscale.policy.model_level import whole_model_unit
from opscale.policy.planner_core import Unit, batch_candidates
from opscale.policy.planner_policy import REQUIRED, STAGES, PlannerParams, PlannerPolicy, planner_params
from opscale.policy.planner_stage import NO_LIMITS, Plan, assemble, budget_for, plan_stage, stage_work
from opscale.policy.registry import Built, PolicyDescriptor, stages_of
from opscale.policy.types import SLO, Limits, LoadWindow, PoolKey

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec


class OperatorParams(PlannerParams):
    floor_fraction: float = Field(0.0, ge=0.0, le=1.0)
    search: Literal["exact", "greedy"] = "exact"  # greedy: the paper's, kept for comparison


def operator_units(perf: PerfModel, stage: str) -> tuple[Unit, ...]:
    return tuple(
        Unit(PoolKey(stage, spec.kind.value), stage, (spec.kind.value,)) for spec in perf.operators(stage)
    )


def plan_operator(
    perf: PerfModel,
    load: LoadWindow,
    slo: SLO,
    limits: Limits = NO_LIMITS,
    *,
    max_batch_size: int = 256,
    floor_fraction: float = 0.0,
    search: str = "exact",
) -> Plan:
    """The ``operator`` policy's raw plan (before the stabilizer); pure, exposed for tests and what-if."""
    batches = batch_candidates(max_batch_size)
    units = {u.pool: u for st in STAGES for u in operator_units(perf, st)}
    stages, works, notes = [], {}, []
    for st in STAGES:
        work = stage_work(load, st)
        works[st] = work
        own = operator_units(perf, st)
        floors: dict[PoolKey, int] = {}
        if floor_fraction > 0.0:
            mu = whole_model_unit(perf, st)
            whole = plan_stage(perf, st, [mu], work, budget_for(slo, st), slo.quantile, batches, limits)
            n = whole.chosen[mu.pool].replicas
            keep = math.ceil(floor_fraction * n - 1e-9)
            floors = {u.pool: keep for u in own}
            notes.append(
                f"{st}: floor keeps {keep} replicas per operator pool "
                f"(⌈{floor_fraction:g} × {n} whole-model replicas⌉)."
            )
        stages.append(
            plan_stage(
                perf, st, own, work, budget_for(slo, st), slo.quantile, batches, limits, floors, search
            )
        )
    header = (
        f"operator plan for {load.arrival_rate_rps:.4g} req/s, {load.input_tokens_mean:.0f} in / "
        f"{load.output_tokens_mean:.0f} out tokens on {perf.gpu.key}: each operator pool sized by "
        f"M/M/R (job = one batch pass) at the fewest GPUs meeting the SLO."
    )
    plan = assemble(perf, stages, units, works, slo, header)
    plan.reasons.extend(notes)
    return plan


class OperatorPolicy(PlannerPolicy):
    name: ClassVar[str] = "operator"
    params_type: ClassVar[type[PlannerParams]] = OperatorParams

    def plan(self, load: LoadWindow, slo: SLO, limits: Limits) -> Plan:
        p = self.params
        floor = p.floor_fraction if isinstance(p, OperatorParams) else 0.0
        search = p.search if isinstance(p, OperatorParams) else "exact"
        return plan_operator(
            self.perf, load, slo, limits, max_batch_size=p.max_batch_size, floor_fraction=floor, search=search
        )

    def colocated_pools(self) -> list[tuple[PoolKey, tuple[str, ...]]]:
        # The floor is not applied in colocated mode (it is defined per stage).
        return [(PoolKey("serving", s.kind.value), (s.kind.value,)) for s in self.perf.operators("decode")]


# --- registration ----------------------------------------------------------------------------------


class OperatorSpecParams(BaseModel):
    """Parameters of the `operator` policy (per-operator M/M/R planning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    floor_fraction: float = Field(0.0, ge=0, le=1, description="share of whole-model capacity kept, [0, 1]")
    max_batch_size: int = Field(256, ge=1, le=65_536, description="in [1, 65536]")


def _build(spec: DeploymentSpec, given: OperatorSpecParams | None) -> Built:
    perf, params = planner_params(spec)
    if given is not None:
        params.update(floor_fraction=given.floor_fraction, max_batch_size=given.max_batch_size)
    pools = tuple(
        PoolKey(s, op.kind.value)
        for s in stages_of(spec)
        for op in perf.operators("prefill" if s == "serving" else s)
    )
    return Built(OperatorPolicy.from_params(params, perf), pools, frozenset(REQUIRED), params)


DESCRIPTOR = PolicyDescriptor(
    name=OperatorPolicy.name,
    summary="OpScale: each operator pool sized by an M/M/R model at the fewest GPUs meeting the SLO",
    build=_build,
    params=OperatorSpecParams,
)
