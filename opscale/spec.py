"""Deployment specs: what a user asks opscale to autoscale, validated once at the API edge.

Pure (pydantic only). Every rejection names the field path and the allowed range; the decision service
turns it into INVALID_ARGUMENT. Specs are stored as ``model_dump(mode="json")`` in the versioned
deployment table and read back with ``DeploymentSpec.model_validate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from opscale.errors import InvalidArgument
from opscale.model import ModelShape, get_gpu, get_preset, shape_from_hf_config
from opscale.policy.registry import PolicyName, descriptor
from opscale.pools import STAGES_FOR_MODE, OperatorKind, PoolKey, ServingMode, Stage, known_pool

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
TEMPLATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


# The names code written against the former spec enums and pool model imports from here.
PolicyKind = PolicyName
PoolRef = PoolKey
__all__ = ["STAGES_FOR_MODE", "OperatorKind", "PolicyKind", "PoolRef", "ServingMode", "Stage"]


def _pool_input(value: Any) -> Any:
    # A pool is written {stage: decode, operator: model} or "decode/model".
    return PoolKey.parse(value) if isinstance(value, str) else value


def _known_pool(pool: PoolKey) -> PoolKey:
    try:
        return known_pool(pool)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None


SpecPool = Annotated[PoolKey, BeforeValidator(_pool_input), AfterValidator(_known_pool)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


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

    pool: SpecPool | None = Field(None, description="the pool these bounds apply to; none: every pool")
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


class LaunchTemplateRef(_Spec):
    """Which launch template (allowed by the node agent's own config) starts a pool's replicas."""

    pool: SpecPool
    template: Annotated[str, Field(pattern=TEMPLATE_PATTERN)]
    args: dict[str, str] = Field(default_factory=dict)


def _pools_in(value: Any) -> Iterator[PoolKey]:
    """Every pool a policy's parameters name, however deep (static pools, a pd pool override, …)."""
    if isinstance(value, PoolKey):
        yield value
    elif isinstance(value, BaseModel):
        for item in dict(value).values():
            yield from _pools_in(item)
    elif isinstance(value, dict | list | tuple):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _pools_in(item)


class DeploymentSpec(_Spec):
    """What to autoscale and to which targets. `params` are the chosen policy's parameters (see the
    policy sections below; `pd` and `static` require theirs). `<policy>_params: {...}` is accepted for
    `params` as well."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="DNS label: a-z, 0-9, '-', 1..63 chars")]
    model: ModelRef = Field(description="the model served")
    gpu_type: GpuType = Field("H100", description="default GPU type of every pool")
    mode: ServingMode = Field(
        ServingMode.DISAGGREGATED,
        description="disaggregated: prefill and decode pools; colocated: serving pools",
    )
    policy: PolicyName = Field(PolicyName("operator"), description="which policy sizes the pools")
    slo: Slo = Field(description="latency targets")
    limits: tuple[PoolLimits, ...] = Field(
        (), description="per-pool bounds; an entry without pool is the default"
    )
    stabilization: Stabilization = Field(Stabilization(), description="damping of scaling decisions")
    interval_s: float = Field(0.0, ge=0, le=3600, description="control interval; 0 = the policy's default")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the policy's parameters (see its section below)"
    )
    launch: tuple[LaunchTemplateRef, ...] = Field(
        (), description="how node agents start each pool's replicas"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="free-form labels")

    @model_validator(mode="before")
    @classmethod
    def _policy_params_field(cls, data: Any) -> Any:
        """`pd_params: {...}` (the form specs had before `params`, still stored and written by users)
        becomes `params`, for the spec's own policy only."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        policy = str(data.get("policy") or "operator")
        for key in [k for k in data if isinstance(k, str) and k.endswith("_params")]:
            value = data.pop(key)
            if value is None:
                continue
            if key != f"{policy}_params":
                raise ValueError(f"{key} does not apply to policy {policy!r}")
            if data.get("params"):
                raise ValueError(f"give the parameters once: params or {key}, not both")
            data["params"] = value
        return data

    @field_validator("params")
    @classmethod
    def _params_of_policy(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        policy = info.data.get("policy")
        if policy is None:
            return value  # the policy itself failed validation; that error is the one to report
        try:
            parsed = descriptor(policy).parse_params(value)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc, "params")) from None
        return {} if parsed is None else parsed.model_dump(mode="json")

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        desc = descriptor(self.policy)
        if self.mode not in desc.modes:
            raise ValueError(desc.mode_reason or f"policy {self.policy!r} cannot scale mode {self.mode!r}")
        stages = STAGES_FOR_MODE[self.mode]
        pools = [lim.pool for lim in self.limits] + [ref.pool for ref in self.launch]
        pools += list(_pools_in(desc.parse_params(self.params)))  # also: required params are there
        for pool in pools:
            if pool is not None and pool.stage not in stages:
                allowed = ", ".join(s.value for s in stages)
                raise ValueError(
                    f"pool {pool} has stage {pool.stage!r}; mode {self.mode.value!r} allows {allowed}"
                )
        keyed = [str(lim.pool) for lim in self.limits]
        duplicates = sorted({k for k in keyed if keyed.count(k) > 1})
        if duplicates:
            raise ValueError(f"limits are given twice for {duplicates[0]}")
        return self

    def policy_params(self) -> BaseModel | None:
        """The spec's own policy's parameters, validated (``None`` when it takes or was given none)."""
        return descriptor(self.policy).parse_params(self.params)

    def limits_for(self, pool: PoolKey) -> PoolLimits:
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
