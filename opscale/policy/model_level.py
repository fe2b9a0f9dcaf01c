"""``model``: the model-level baseline — the unit is a whole model replica per stage.

Pools ``prefill/model`` and ``decode/model``. A replica is a tensor-parallel group holding every
operator of the model; its pass time is the sum of the operators' pass times at that TP degree
(``PerfModel`` prices each operator's split and collectives), its memory the weights of all operators +
the KV cache of the batch + the largest activation working set. TP is a power of two, from the smallest
whose GPUs hold that, up to one 8-GPU node.

How the comparison with ``operator`` is kept fair (the headline numbers are measured against this):

* same performance model, same SLO, same load mapping and the same M/M/R (job = one batch pass);
* the same search: batch size from the same candidates, TP from the same choices, replicas from the
  stability bound up, and the same exact fewest-GPU solve — not a fixed batch or TP;
* a whole replica waits in ONE queue per pass, where the operator plan is charged one wait per
  operator pool, so queueing favours this baseline;
* both count whole GPUs: an operator replica occupies at least one GPU even when it is tiny (embedding,
  lm_head), which also favours this baseline at low load. Packing small operators onto shared GPUs is
  placement's job, and is not credited to the operator plan here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from opscale.model import PerfModel
from opscale.policy.planner_core import Unit, batch_candidates
from opscale.policy.planner_policy import REQUIRED, STAGES, PlannerParams, PlannerPolicy, planner_params
from opscale.policy.planner_stage import NO_LIMITS, Plan, assemble, budget_for, plan_stage, stage_work
from opscale.policy.registry import Built, PolicyDescriptor, whole_pools
from opscale.policy.types import SLO, Limits, LoadWindow, PoolKey

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec


def whole_model_unit(perf: PerfModel, stage: str) -> Unit:
    return Unit(PoolKey(stage, "model"), stage, tuple(spec.kind.value for spec in perf.operators(stage)))


def plan_model(
    perf: PerfModel, load: LoadWindow, slo: SLO, limits: Limits = NO_LIMITS, *, max_batch_size: int = 256
) -> Plan:
    """The ``model`` policy's raw plan (before the stabilizer); pure, exposed for tests and what-if."""
    batches = batch_candidates(max_batch_size)
    units = {st: whole_model_unit(perf, st) for st in STAGES}
    works = {st: stage_work(load, st) for st in STAGES}
    stages = [
        plan_stage(perf, st, [units[st]], works[st], budget_for(slo, st), slo.quantile, batches, limits)
        for st in STAGES
    ]
    header = (
        f"model plan for {load.arrival_rate_rps:.4g} req/s, {load.input_tokens_mean:.0f} in / "
        f"{load.output_tokens_mean:.0f} out tokens on {perf.gpu.key}: whole-model replicas "
        f"(tensor-parallel groups) per stage, sized by the same M/M/R and search."
    )
    return assemble(perf, stages, {u.pool: u for u in units.values()}, works, slo, header)


class ModelParams(PlannerParams):
    interval_s: float = Field(20.0, gt=0)  # the model-level baselines' control interval in the paper


class ModelPolicy(PlannerPolicy):
    name: ClassVar[str] = "model"
    params_type: ClassVar[type[PlannerParams]] = ModelParams

    def plan(self, load: LoadWindow, slo: SLO, limits: Limits) -> Plan:
        return plan_model(self.perf, load, slo, limits, max_batch_size=self.params.max_batch_size)

    def colocated_pools(self) -> list[tuple[PoolKey, tuple[str, ...]]]:
        return [(PoolKey("serving", "model"), whole_model_unit(self.perf, "decode").ops)]


# --- registration ----------------------------------------------------------------------------------


def _build(spec: DeploymentSpec, given: None) -> Built:
    perf, params = planner_params(spec)
    return Built(ModelPolicy.from_params(params, perf), whole_pools(spec), frozenset(REQUIRED), params)


DESCRIPTOR = PolicyDescriptor(
    name=ModelPolicy.name,
    summary="the model-level baseline: whole tensor-parallel model replicas, same model and search",
    build=_build,
)
