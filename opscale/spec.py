"""Deployment specs: what a user asks opscale to autoscale, validated once at the API edge.

Pure (pydantic only). Every rejection names the field path and the allowed range; the decision service
turns it into INVALID_ARGUMENT. Specs are stored as ``model_dump(mode="json")`` in the versioned
deployment table and read back with ``DeploymentSpec.model_validate``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from opscale.errors import InvalidArgument
from opscale.model import ModelShape, get_gpu, get_preset, shape_from_hf_config

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
TEMPLATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class Stage(enum.StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    SERVING = "serving"


class OperatorKind(enum.StrEnum):
    EMBEDDING = "embedding"
    ATTENTION = "attention"
    FFN = "ffn"
    EXPERTS = "experts"
    LM_HEAD = "lm_head"
    MODEL = "model"


class ServingMode(enum.StrEnum):
    DISAGGREGATED = "disaggregated"
    COLOCATED = "colocated"


class PolicyKind(enum.StrEnum):
    OPERATOR = "operator"
    MODEL = "model"
    PD = "pd"
    UTILIZATION = "utilization"
    STATIC = "static"


STAGES_FOR_MODE = {
    ServingMode.DISAGGREGATED: (Stage.PREFILL, Stage.DECODE),
    ServingMode.COLOCATED: (Stage.SERVING,),
}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class PoolRef(_Spec):
    """One pool: an operator of a stage (`model` = a whole model replica of that stage)."""

    stage: Stage
    operator: OperatorKind

    def __str__(self) -> str:
        return f"{self.stage.value}/{self.operator.value}"


class ModelRef(_Spec):
    """The model served: a built-in preset or a HuggingFace config.json (exactly one)."""

    preset: str | None = Field(None, description="built-in model preset, e.g. llama3-70b")
    hf_config: dict[str, Any] | None = Field(None, description="a HuggingFace config.json, parsed")
    name: str | None = Field(None, max_length=128, description="display name (default: the preset)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        if (self.preset is None) == (self.hf_config is None):
            raise ValueError("give exactly one of preset or hf_config")
        if self.hf_config is not None and not self.name:
            raise ValueError("a model given by hf_config needs a name")
        try:
            self.shape()  # an unknown preset or an unusable config is the caller's mistake, said now
        except InvalidArgument as exc:
            raise ValueError(exc.message) from None
        return self

    def shape(self) -> ModelShape:
        if self.preset is not None:
            return get_preset(self.preset)
        return shape_from_hf_config(self.hf_config or {}, self.display_name)

    @property
    def display_name(self) -> str:
        return self.name or self.preset or ""


class Slo(_Spec):
    """Latency targets at a percentile; every policy plans to meet both."""

    ttft_ms: float = Field(gt=0, le=600_000, description="time-to-first-token target, ms, in (0, 600000]")
    tbt_ms: float = Field(gt=0, le=60_000, description="time-between-tokens target, ms, in (0, 60000]")
    percentile: float = Field(99.0, gt=0, lt=100, description="percentile the targets apply to, in (0, 100)")


def _known_gpu(name: str) -> str:
    try:
        get_gpu(name)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None
    return name


GpuType = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_gpu)]


class PoolLimits(_Spec):
    """Bounds for one pool, or (without `pool`) the default for every pool."""

    pool: PoolRef | None = Field(None, description="the pool these bounds apply to; none: every pool")
    min_replicas: int = Field(0, ge=0, le=100_000, description="in [0, 100000]")
    max_replicas: int = Field(64, ge=1, le=100_000, description="in [1, 100000]")
    max_step: int = Field(0, ge=0, le=100_000, description="largest change per tick; 0 = unlimited")
    gpu_types: tuple[GpuType, ...] = Field((), description="allowed GPU types, most preferred first")

    @model_validator(mode="after")
    def _min_le_max(self) -> PoolLimits:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        return self


class Stabilization(_Spec):
    """How the stabilizer damps a policy's recommendations (HPA-style windows, cooldowns, fail-static)."""

    scale_up_window_s: float = Field(0.0, ge=0, le=3600, description="in [0, 3600]")
    scale_down_window_s: float = Field(60.0, ge=0, le=3600, description="in [0, 3600]")
    scale_up_cooldown_s: float = Field(0.0, ge=0, le=3600, description="in [0, 3600]")
    scale_down_cooldown_s: float = Field(30.0, ge=0, le=3600, description="in [0, 3600]")
    max_staleness_s: float = Field(10.0, gt=0, le=3600, description="in (0, 3600]")


class OperatorParams(_Spec):
    """Parameters of the `operator` policy (per-operator M/M/R planning)."""

    floor_fraction: float = Field(0.0, ge=0, le=1, description="share of whole-model capacity kept, [0, 1]")
    max_batch_size: int = Field(256, ge=1, le=65_536, description="in [1, 65536]")


class PdParams(_Spec):
    """Parameters of the `pd` policy (HeteroScale: decode tokens/s sizes both pools at a fixed ratio)."""

    target_decode_tokens_per_s_per_instance: float = Field(
        gt=0, description="decode tokens/s one decode instance should carry, > 0"
    )
    prefill_per_decode: float = Field(
        0.5, gt=0, le=16, description="prefill instances per decode instance, in (0, 16]"
    )
    scale_out_threshold: float = Field(1.1, gt=0, le=10, description="load/target above which to scale out")
    scale_in_threshold: float = Field(0.7, gt=0, le=10, description="load/target below which to scale in")

    @model_validator(mode="after")
    def _band(self) -> PdParams:
        if self.scale_in_threshold >= self.scale_out_threshold:
            raise ValueError(
                f"scale_in_threshold ({self.scale_in_threshold}) must be below "
                f"scale_out_threshold ({self.scale_out_threshold})"
            )
        return self


class UtilizationParams(_Spec):
    """Parameters of the `utilization` policy (the Kubernetes HPA formula)."""

    target_utilization: float = Field(0.6, gt=0, le=1, description="in (0, 1]")


class StaticPool(_Spec):
    """A fixed size for one pool."""

    pool: PoolRef
    replicas: int = Field(ge=0, le=100_000)
    gpus_per_replica: int = Field(1, ge=1, le=64)
    batch_size: int = Field(64, ge=1, le=65_536)


class StaticParams(_Spec):
    """Parameters of the `static` policy (peak provisioning: never changes)."""

    pools: tuple[StaticPool, ...] = Field(min_length=1, description="at least one pool")


class LaunchTemplateRef(_Spec):
    """Which launch template (allowed by the node agent's own config) starts a pool's replicas."""

    pool: PoolRef
    template: Annotated[str, Field(pattern=TEMPLATE_PATTERN)]
    args: dict[str, str] = Field(default_factory=dict)


PARAMS_FIELD = {
    PolicyKind.OPERATOR: "operator_params",
    PolicyKind.PD: "pd_params",
    PolicyKind.UTILIZATION: "utilization_params",
    PolicyKind.STATIC: "static_params",
}


class DeploymentSpec(_Spec):
    """What to autoscale and to which targets. Policy parameters go in the `<policy>_params` field of the
    chosen policy only (`pd` and `static` require theirs)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="DNS label: a-z, 0-9, '-', 1..63 chars")]
    model: ModelRef = Field(description="the model served")
    gpu_type: GpuType = Field("H100", description="default GPU type of every pool")
    mode: ServingMode = Field(
        ServingMode.DISAGGREGATED,
        description="disaggregated: prefill and decode pools; colocated: serving pools",
    )
    policy: PolicyKind = Field(PolicyKind.OPERATOR, description="which policy sizes the pools")
    slo: Slo = Field(description="latency targets")
    limits: tuple[PoolLimits, ...] = Field(
        (), description="per-pool bounds; an entry without pool is the default"
    )
    stabilization: Stabilization = Field(Stabilization(), description="damping of scaling decisions")
    interval_s: float = Field(0.0, ge=0, le=3600, description="control interval; 0 = the policy's default")
    operator_params: OperatorParams | None = Field(None, description="only with policy operator")
    pd_params: PdParams | None = Field(None, description="only with policy pd")
    utilization_params: UtilizationParams | None = Field(None, description="only with policy utilization")
    static_params: StaticParams | None = Field(None, description="only with policy static")
    launch: tuple[LaunchTemplateRef, ...] = Field(
        (), description="how node agents start each pool's replicas"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="free-form labels")

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        given = [f for f in PARAMS_FIELD.values() if getattr(self, f) is not None]
        expected = PARAMS_FIELD.get(self.policy)
        stray = [f for f in given if f != expected]
        if stray:
            raise ValueError(f"{stray[0]} does not apply to policy {self.policy.value!r}")
        if self.policy in (PolicyKind.PD, PolicyKind.STATIC) and expected not in given:
            raise ValueError(f"policy {self.policy.value!r} needs {expected}")
        if self.policy is PolicyKind.PD and self.mode is not ServingMode.DISAGGREGATED:
            raise ValueError(
                "policy 'pd' scales prefill and decode pools together: mode must be 'disaggregated'"
            )
        stages = STAGES_FOR_MODE[self.mode]
        pools = [lim.pool for lim in self.limits] + [ref.pool for ref in self.launch]
        if self.static_params is not None:
            pools += [p.pool for p in self.static_params.pools]
        for pool in pools:
            if pool is not None and pool.stage not in stages:
                allowed = ", ".join(s.value for s in stages)
                raise ValueError(
                    f"pool {pool} has stage {pool.stage.value!r}; mode {self.mode.value!r} allows {allowed}"
                )
        keyed = [str(lim.pool) for lim in self.limits]
        duplicates = sorted({k for k in keyed if keyed.count(k) > 1})
        if duplicates:
            raise ValueError(f"limits are given twice for {duplicates[0]}")
        return self

    def limits_for(self, pool: PoolRef) -> PoolLimits:
        """The pool's own limits, else the default entry (pool unset), else the built-in default."""
        default = PoolLimits()
        for lim in self.limits:
            if lim.pool == pool:
                return lim
            if lim.pool is None:
                default = lim
        return default


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """'spec.slo.ttft_ms: Input should be greater than 0 (got -5)' for each error, joined by '; '."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        path = ".".join(p for p in (prefix, loc) if p)
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        got = (
            ""
            if isinstance(value, dict | list | tuple) or error["type"] == "missing"
            else f" (got {value!r})"
        )
        parts.append(f"{path or 'spec'}: {message}{got}")
    return "; ".join(parts)


def parse_spec(data: dict[str, Any]) -> DeploymentSpec:
    """Validate a spec given as plain data; raises ``InvalidArgument`` naming every bad field."""
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]["loc"]
        raise InvalidArgument(
            describe_validation_error(exc, "spec"), field="spec." + ".".join(map(str, first))
        ) from None
