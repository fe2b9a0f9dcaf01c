"""What the repositories return: frozen, slotted value objects, never ORM rows.

A caller that holds a record after its session closed holds plain data — no lazy loads that fail on
a detached row, no accidental writes through an attribute. Timestamps are timezone-aware UTC.
JSON columns come back as fresh ``dict``/``list`` objects typed read-only (``Mapping``/``Sequence``):
mutating them changes nothing in the database, so do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opscale.db.status import CommandKind, CommandStatus, NodeStatus, ReplicaDesired, ReplicaObserved

Json = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    name: str
    version: int  # the spec version this record carries (the current one unless asked otherwise)
    spec: Json
    frozen: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeploymentVersionRecord:
    name: str
    version: int
    spec: Json
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class OperatorProfileRecord:
    model: str
    gpu_type: str
    stage: str
    operator: str
    profile: Json
    source: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GpuRecord:
    """One GPU as an agent reports it (input to ``NodeRepo.register``) and as stored."""

    index: int
    uuid: str
    gpu_type: str
    memory_bytes: int
    nvlink_domain: str | None = None
    labels: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    status: NodeStatus
    labels: Json  # zone, s2, s1, s0 (rack), nvlink_domain, …
    agent_session_id: str | None
    last_heartbeat_at: datetime | None
    registered_at: datetime
    status_changed_at: datetime
    version: int
    gpus: tuple[GpuRecord, ...]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One entry of a replica's status history."""

    at: datetime
    field: str  # "desired" or "observed"
    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    id: str
    deployment: str
    stage: str
    operator: str
    node: str | None  # node name; None while unplaced or after its node was removed
    gpu_indices: tuple[int, ...]
    desired_state: ReplicaDesired
    observed_state: ReplicaObserved
    generation: int
    version: int
    status_history: tuple[StatusChange, ...]  # oldest first, capped
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: int
    idempotency_key: str
    node: str
    replica_id: str
    generation: int
    kind: CommandKind
    status: CommandStatus
    attempts: int
    payload: Json
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One control tick of one deployment. ``id`` is None until the ledger stored it."""

    deployment: str
    spec_version: int
    tick_at: datetime
    policy: str
    policy_version: str
    inputs: Json
    outputs: Json
    reasons: Sequence[str]
    predicted: Json  # ttft_ms, tbt_ms, gpus, watts
    stabilizer: Json  # what the stabilizer changed and why
    leader_id: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    object_kind: str
    object_name: str
    before: Json | None
    after: Json | None


@dataclass(frozen=True, slots=True)
class PoolTargetRecord:
    """The desired replica count of one operator pool and what one of its replicas needs."""

    deployment: str
    stage: str
    operator: str
    replicas: int
    demand: Json  # gpus_per_replica, memory_bytes_per_gpu, compute_fraction, gpu_types, template, args…
    spec_version: int
    decision_id: str | None
    version: int
    updated_at: datetime
