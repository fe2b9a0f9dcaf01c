"""``static``: peak provisioning. Every pool gets the fixed plan it was configured with, always.

It still passes through the stabilizer — bounds, a freeze and any step limit the deployment sets apply
to it as to every policy — but its own defaults add no windows, cooldowns or step limits, and it needs no
signal, so it never goes fail-static.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opscale.errors import InvalidArgument
from opscale.policy.pipeline import finish, parse_params, pool_text
from opscale.policy.registry import Built, PolicyDescriptor, base_params
from opscale.policy.stabilizer import StabilizerConfig
from opscale.policy.types import PolicyInput, PolicyOutput, PoolKey, PoolPlan
from opscale.spec import SpecPool

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec


class StaticPool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(ge=0)
    batch_size: int | None = Field(None, ge=1)
    gpus_per_replica: int = Field(1, ge=1)
    gpu_share: float = Field(1.0, gt=0.0, le=1.0)
    micro_batches: int = Field(1, ge=1, le=64)


class StaticParams(BaseModel):
    """``pools`` maps "stage/operator" to a replica count or to a full ``StaticPool``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: dict[str, StaticPool | int] = Field(min_length=1)
    interval_s: float = Field(60.0, gt=0)

    @field_validator("pools")
    @classmethod
    def _pools(cls, value: dict[str, StaticPool | int]) -> dict[str, StaticPool | int]:
        for text, spec in value.items():
            pool_text(text)
            if isinstance(spec, int) and spec < 0:
                raise ValueError(f"{text}: replicas must be >= 0, got {spec}")
        return value


class StaticPolicy:
    name: ClassVar[str] = "static"
    version: ClassVar[str] = "1"
    stabilizer_defaults: ClassVar[StabilizerConfig] = StabilizerConfig()

    def __init__(self, params: StaticParams) -> None:
        self.params = params
        self.plans: dict[PoolKey, PoolPlan] = {}
        for text, spec in params.pools.items():
            pool = spec if isinstance(spec, StaticPool) else StaticPool(replicas=spec)
            self.plans[PoolKey.parse(text)] = PoolPlan(
                replicas=pool.replicas,
                batch_size=pool.batch_size,
                gpus_per_replica=pool.gpus_per_replica,
                gpu_share=pool.gpu_share,
                micro_batches=pool.micro_batches,
            )

    @classmethod
    def from_params(cls, params: Mapping[str, object] | None = None) -> StaticPolicy:
        return cls(parse_params(StaticParams, params, cls.name))

    @property
    def interval_s(self) -> float:
        return self.params.interval_s

    def decide(self, inp: PolicyInput) -> PolicyOutput:
        reasons = [
            f"{pool}: fixed at {plan.replicas} replicas (static peak provisioning)."
            for pool, plan in sorted(self.plans.items())
        ]
        return finish(
            inp,
            policy=self.name,
            raw_plans=self.plans,
            reasons=reasons,
            defaults=self.stabilizer_defaults,
            required=(),
        )


# --- registration ----------------------------------------------------------------------------------


class StaticSpecPool(BaseModel):
    """A fixed size for one pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: SpecPool
    replicas: int = Field(ge=0, le=100_000)
    gpus_per_replica: int = Field(1, ge=1, le=64)
    batch_size: int = Field(64, ge=1, le=65_536)
    gpu_share: float = Field(
        1.0, gt=0.0, le=1.0, description="below 1: each replica on this share of one GPU (gpus_per_replica 1)"
    )
    micro_batches: int = Field(1, ge=1, le=64, description="decode operator pools: ping-pong micro-batches")


class StaticSpecParams(BaseModel):
    """Parameters of the `static` policy (peak provisioning: never changes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: tuple[StaticSpecPool, ...] = Field(min_length=1, description="at least one pool")


def _build(spec: DeploymentSpec, given: StaticSpecParams | None) -> Built:
    if given is None:
        raise InvalidArgument("policy 'static' needs static_params", field="params")
    params = base_params(spec) | {
        "pools": {
            str(p.pool): {
                "replicas": p.replicas,
                "batch_size": p.batch_size,
                "gpus_per_replica": p.gpus_per_replica,
                "gpu_share": p.gpu_share,
                "micro_batches": p.micro_batches,
            }
            for p in given.pools
        }
    }
    pools = tuple(p.pool for p in given.pools)
    return Built(StaticPolicy.from_params(params), pools, frozenset(), params)


DESCRIPTOR = PolicyDescriptor(
    name=StaticPolicy.name,
    summary="peak provisioning: every pool at a fixed size",
    build=_build,
    params=StaticSpecParams,
    params_required=True,
)
