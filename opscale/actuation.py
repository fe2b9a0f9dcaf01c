"""Actuation: how a decision becomes running replicas, as an interface with typed commands.

The decision loop hands each decision to an ``Actuator`` as ``ResizePool`` commands (the full desired
count per pool, level-triggered) and records the ``Actuation`` it gets back. Two implementations:

* **node agents** (bare metal): placement turns the resize into replicas on GPUs and sends the agents
  typed ``StartReplica`` / ``DrainReplica`` / ``StopReplica`` commands
  (``opscale/services/decision/actuators.py`` hands over, ``opscale/services/placement`` places and
  streams);
* **Kubernetes through KEDA**: nothing is pushed; the KEDA external scaler (``opscale serve keda``)
  serves each pool's decided count as its metric and the HPA sets the replicas.

The command types here are what placement stores (``to_payload``: the JSON document of a command row)
and what the wire carries to agents (``opscale.wire.commands``): one shape from placement to the agent's
supervisor, instead of dictionaries read field by field on each side.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opscale.errors import InvalidArgument
from opscale.pools import PoolKey


class Outcome(enum.StrEnum):
    """What became of one hand-off (the decision's ``placement_outcome``)."""

    PENDING = "pending"  # recorded; the actuator has not answered yet
    APPLIED = "applied"
    PARTIAL = "partial"  # applied, but some pools cannot reach their count (infeasible)
    FAILED = "failed"  # the actuator refused or was unreachable; retried next tick
    NOT_NEEDED = "not_needed"  # nothing changed since the last applied decision


@dataclass(frozen=True, slots=True)
class ResizePool:
    """Resize one pool of a deployment to ``replicas`` (including ``draining`` ones, which are out of
    routing and stop when the policy commits a soft scale-in)."""

    pool: PoolKey
    replicas: int
    draining: int = 0
    batch_size: int | None = None
    gpus_per_replica: int = 1
    gpu_type: str = ""
    gpu_share: float = 1.0  # below 1: a share of one GPU per replica (opscale.model.sharing)
    micro_batches: int = 1

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.draining < 0:
            raise InvalidArgument(
                f"{self.pool}: replicas and draining must be >= 0, got {self.replicas}, {self.draining}",
                field="replicas",
            )


@dataclass(frozen=True, slots=True)
class Actuation:
    """An actuator's answer to one hand-off: its outcome and what it did or saw, in a sentence."""

    outcome: Outcome
    message: str = ""


class Actuator(Protocol):
    """Turns a decision's resizes into running replicas. ``actuate`` never raises for a refused or
    unreachable back end: that is ``Outcome.FAILED`` with the reason, retried on the next tick."""

    async def actuate(
        self, deployment: str, spec_version: int, decision_id: str, resize: Sequence[ResizePool]
    ) -> Actuation: ...

    async def close(self) -> None: ...


# --- replica commands (placement -> node agent) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartReplica:
    """Start replica ``replica_id`` of a pool on these GPUs of the agent's node, with the launch
    template the agent's own config allows and values for its placeholders."""

    replica_id: str
    generation: int
    deployment: str
    pool: PoolKey
    template: str
    gpu_indices: tuple[int, ...]
    args: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DrainReplica:
    """Phase one of a scale-in: out of routing, let in-flight work finish within ``grace_s``."""

    replica_id: str
    generation: int
    grace_s: float


@dataclass(frozen=True, slots=True)
class StopReplica:
    """Phase two (or a hard stop): terminate within ``grace_s``."""

    replica_id: str
    generation: int
    grace_s: float


ReplicaCommand = StartReplica | DrainReplica | StopReplica


def to_payload(command: ReplicaCommand) -> dict[str, Any]:
    """The JSON document a command row keeps (identity and generation are columns of their own)."""
    if isinstance(command, StartReplica):
        return {
            "deployment": command.deployment,
            "stage": command.pool.stage,
            "operator": command.pool.operator,
            "template": command.template,
            "args": dict(command.args),
            "gpu_indices": list(command.gpu_indices),
            "env": dict(command.env),
        }
    return {"grace_s": command.grace_s}


def from_payload(kind: str, replica_id: str, generation: int, doc: Mapping[str, Any]) -> ReplicaCommand:
    """Inverse of ``to_payload`` for a row of ``kind`` ("start", "drain", "stop")."""
    if kind == "start":
        return StartReplica(
            replica_id=replica_id,
            generation=generation,
            deployment=str(doc.get("deployment", "")),
            pool=PoolKey(str(doc.get("stage") or "serving"), str(doc.get("operator") or "model")),
            template=str(doc.get("template", "")),
            gpu_indices=tuple(int(i) for i in doc.get("gpu_indices", [])),
            args={str(k): str(v) for k, v in dict(doc.get("args", {})).items()},
            env={str(k): str(v) for k, v in dict(doc.get("env", {})).items()},
        )
    grace = float(doc.get("grace_s", 0.0))
    if kind == "drain":
        return DrainReplica(replica_id, generation, grace)
    if kind == "stop":
        return StopReplica(replica_id, generation, grace)
    raise InvalidArgument(f"command kind must be start, drain or stop, got {kind!r}", field="kind")
