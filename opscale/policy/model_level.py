"""``model``: the model-level baseline — the unit is a whole model replica per stage.

Pools ``prefill/model`` and ``decode/model``. A replica is a tensor-parallel group holding every
operator of the model; its pass time is the sum of the operators' pass times at that TP degree
(``PerfModel`` prices each operator's split and collectives), its memory the weights of all operators +
the KV cache of the batch + the largest activation working set. TP is a power of two, from the smallest
whose GPUs hold that, up to one 8-GPU node.

How the comparison with ``operator`` is kept fair (the headline numbers are measured against this):

* same performance model, same SLO, the same length distributions, the same prefill queue model
  (GI/G/R per pool, the TTFT percentile of the path) and decode residency model (Little's law, KV at a
  quantile of the resident sequences), the same one memory model;
* the same search: batch size from the same candidates, TP from the same choices, and the same exact
  fewest-GPU solve — not a fixed batch or TP;
* a whole replica queues a prompt once, where an operator path queues it at every pool, and pays no
  activation hand-offs between pools;
* both count whole GPUs: an operator replica occupies at least one GPU even when it is tiny (embedding,
  lm_head), which also favours this baseline at low load. Packing small operators onto shared GPUs is
  placement's job, and is not credited to the operator plan here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from opscale.model import PerfModel
from opscale.policy.cadence import WHOLE_MODEL_INTERVAL_S
from opscale.policy.hybrid import whole_model_unit
from opscale.policy.planner_core import batch_candidates
from opscale.policy.planner_policy import REQUIRED, STAGES, PlannerParams, PlannerPolicy, planner_params
from opscale.policy.planner_stage import NO_LIMITS, Plan, assemble, plan_stages
from opscale.policy.registry import Built, PolicyDescriptor, whole_pools
from opscale.policy.types import SLO, Limits, LoadWindow, PoolKey

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec


def plan_model(
    perf: PerfModel, load: LoadWindow, slo: SLO, limits: Limits = NO_LIMITS, *, max_batch_size: int = 256
) -> Plan:
    """The ``model`` policy's raw plan (before the stabilizer); pure, exposed for tests and what-if."""
    units = {st: whole_model_unit(perf, st) for st in STAGES}
    loads, pre, dec = plan_stages(
        perf, load, slo, {st: [u] for st, u in units.items()}, limits, batch_candidates(max_batch_size)
    )
    header = (
        f"model plan for {load.arrival_rate_rps:.4g} req/s, {load.input_tokens_mean:.0f} in / "
        f"{load.output_tokens_mean:.0f} out tokens (means) on {perf.gpu.key}: whole-model replicas "
        f"(tensor-parallel groups) per stage, sized by the same queue and residency models."
    )
    return assemble(perf, loads, (pre, dec), {u.pool: u for u in units.values()}, slo, header)


class ModelParams(PlannerParams):
    # the model-level baselines' control interval in the paper
    interval_s: float = Field(WHOLE_MODEL_INTERVAL_S, gt=0)


class ModelPolicy(PlannerPolicy):
    name: ClassVar[str] = "model"
    params_type: ClassVar[type[PlannerParams]] = ModelParams

    def plan(self, load: LoadWindow, slo: SLO, limits: Limits) -> Plan:
        return plan_model(self.perf, load, slo, limits, max_batch_size=self.params.max_batch_size)

    def colocated_pools(self) -> list[tuple[PoolKey, tuple[str, ...]]]:
        return [(PoolKey("serving", "model"), whole_model_unit(self.perf, "decode").ops)]


# --- registration ----------------------------------------------------------------------------------


class ModelSpecParams(BaseModel):
    """Parameters of the `model` policy (the baseline runs without forecast or correction by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(256, ge=1, le=65_536, description="in [1, 65536]")
    forecast: bool = Field(False, description="plan for the load forecast over replica start-up")
    correction: bool = Field(False, description="correct the latency model by the observed p99s")
    startup_s: float | None = Field(None, gt=0, le=3600, description="measured replica start-up, seconds")
    headroom: float = Field(0.0, ge=0, le=4, description="plan for the load × (1 + headroom), [0, 4]")


def _build(spec: DeploymentSpec, given: ModelSpecParams | None) -> Built:
    perf, params = planner_params(spec)
    if given is not None:
        params.update(given.model_dump())
    return Built(ModelPolicy.from_params(params, perf), whole_pools(spec), frozenset(REQUIRED), params)


DESCRIPTOR = PolicyDescriptor(
    name=ModelPolicy.name,
    summary="the model-level baseline: whole tensor-parallel model replicas, same model and search",
    build=_build,
    params=ModelSpecParams,
)
