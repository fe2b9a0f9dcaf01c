"""The database schema, in one place: typed SQLAlchemy 2.0 declarative models.

Conventions (see also :mod:`opscale.db.coltypes`):

- Timestamps are UTC, timezone-aware in Python, ``timestamptz`` on PostgreSQL.
- Rows that several writers race on carry ``version`` and are updated with compare-and-swap
  (``UPDATE … WHERE version = :expected``) by the repositories.
- Constraint and index names come from :data:`NAMING_CONVENTION`, so Alembic emits the same names on
  both backends and a later migration can drop a constraint by name.
- Deployments are soft-deleted (``deleted_at``): their spec versions, decisions and audit rows keep
  pointing at something, and re-creating the name continues the version sequence, so a decision's
  ``(deployment, spec_version)`` names exactly one spec forever.
- Replicas, decisions and audit rows name their deployment by *name*, not by foreign key: they are
  written by different services (placement, decision) and the ledger must outlive the objects it
  describes. Inventory tables (nodes → GPUs, commands → nodes/replicas) use real foreign keys.

Changing anything here needs an Alembic revision: ``tests/migrations`` fails when the migrations and
these models differ.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from opscale.db.coltypes import BigIntId, JSONType, NullableJSONType, UtcDateTime, status_enum
from opscale.db.status import CommandKind, CommandStatus, NodeStatus, ReplicaDesired, ReplicaObserved

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEPLOYMENT_NAME_LENGTH = 63  # a DNS label, so names work as Kubernetes object names too
NAME_LENGTH = 255
ID_LENGTH = 64
KIND_LENGTH = 64


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSONType}


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(DEPLOYMENT_NAME_LENGTH), unique=True)
    current_version: Mapped[int]
    frozen: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    versions: Mapped[list[DeploymentVersion]] = relationship(
        back_populates="deployment", order_by="DeploymentVersion.version", passive_deletes=True
    )


class DeploymentVersion(Base):
    __tablename__ = "deployment_versions"
    __table_args__ = (sa.UniqueConstraint("deployment_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id", ondelete="CASCADE"))
    version: Mapped[int]
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))

    deployment: Mapped[Deployment] = relationship(back_populates="versions")


class OperatorProfile(Base):
    __tablename__ = "operator_profiles"
    __table_args__ = (sa.UniqueConstraint("model", "gpu_type", "stage", "operator"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    gpu_type: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    stage: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    operator: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    profile: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    created_at: Mapped[datetime]


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), unique=True)
    status: Mapped[NodeStatus] = mapped_column(status_enum(NodeStatus))
    # Topology: zone, s2, s1, s0 (rack), nvlink_domain, plus free-form labels.
    labels: Mapped[dict[str, Any]]
    agent_session_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    last_heartbeat_at: Mapped[datetime | None]
    registered_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]
    version: Mapped[int]

    gpus: Mapped[list[Gpu]] = relationship(
        back_populates="node", order_by="Gpu.index", cascade="all, delete-orphan", passive_deletes=True
    )


class Gpu(Base):
    __tablename__ = "gpus"
    __table_args__ = (sa.UniqueConstraint("node_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(sa.ForeignKey("nodes.id", ondelete="CASCADE"))
    index: Mapped[int]
    uuid: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    gpu_type: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    memory_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    nvlink_domain: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    labels: Mapped[dict[str, Any]]

    node: Mapped[Node] = relationship(back_populates="gpus")


class Replica(Base):
    __tablename__ = "replicas"
    __table_args__ = (sa.Index(None, "deployment", "stage", "operator"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    deployment: Mapped[str] = mapped_column(sa.String(DEPLOYMENT_NAME_LENGTH))
    stage: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    operator: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    node_id: Mapped[int | None] = mapped_column(sa.ForeignKey("nodes.id", ondelete="SET NULL"), index=True)
    gpu_indices: Mapped[list[int]] = mapped_column(JSONType)
    desired_state: Mapped[ReplicaDesired] = mapped_column(status_enum(ReplicaDesired))
    observed_state: Mapped[ReplicaObserved] = mapped_column(status_enum(ReplicaObserved))
    # Bumped whenever the desired state changes; agents ack (id, generation), so a re-sent command for
    # an old generation is recognisably stale.
    generation: Mapped[int]
    version: Mapped[int]
    # Newest last, capped (see repo.replicas.HISTORY_LIMIT): replicas are short-lived and only the
    # recent transitions explain the present, so a JSON list beats a separate table and a join.
    status_history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (sa.Index(None, "node_id", "status"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), unique=True)
    node_id: Mapped[int] = mapped_column(sa.ForeignKey("nodes.id", ondelete="CASCADE"))
    replica_id: Mapped[str] = mapped_column(sa.ForeignKey("replicas.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int]
    kind: Mapped[CommandKind] = mapped_column(status_enum(CommandKind))
    status: Mapped[CommandStatus] = mapped_column(status_enum(CommandStatus))
    attempts: Mapped[int]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)


class Decision(Base):
    """The decision ledger: one row per deployment per control tick, enough to explain and replay it."""

    __tablename__ = "decisions"
    # Unique: one decision per deployment per tick slot, so a leader hand-over cannot decide twice.
    __table_args__ = (sa.Index(None, "deployment", "tick_at", unique=True),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    deployment: Mapped[str] = mapped_column(sa.String(DEPLOYMENT_NAME_LENGTH))
    spec_version: Mapped[int]
    tick_at: Mapped[datetime]
    policy: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    policy_version: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    inputs: Mapped[dict[str, Any]]
    outputs: Mapped[dict[str, Any]]
    reasons: Mapped[list[str]] = mapped_column(JSONType)
    predicted: Mapped[dict[str, Any]]  # ttft_ms, tbt_ms, gpus, watts
    stabilizer: Mapped[dict[str, Any]]  # what the stabilizer changed and why
    leader_id: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (sa.Index(None, "object_kind", "object_name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    object_kind: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    object_name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    before: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONType)


class PoolTarget(Base):
    """The latest desired replica count of one operator pool, as placement was last told (ApplyDesired).

    Level-triggered reconciliation reads it: a pool with fewer live replicas than ``replicas`` (its node
    was lost, a replica failed for good) gets new ones placed without waiting for the next decision.
    ``demand`` holds what placing one replica needs (GPUs, memory per GPU, compute share, GPU types,
    launch template and its arguments), so re-placement needs neither the spec nor the decision.
    """

    __tablename__ = "pool_targets"
    __table_args__ = (sa.UniqueConstraint("deployment", "stage", "operator"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment: Mapped[str] = mapped_column(sa.String(DEPLOYMENT_NAME_LENGTH))
    stage: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    operator: Mapped[str] = mapped_column(sa.String(KIND_LENGTH))
    replicas: Mapped[int]
    demand: Mapped[dict[str, Any]]
    spec_version: Mapped[int]
    decision_id: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    version: Mapped[int]
    updated_at: Mapped[datetime]


class LeaseEpoch(Base):
    """The fencing token of each named lease (``opscale.lease``): ``epoch`` grows by one every time a
    holder takes the lease. A holder's writes check, in their own transaction, that the epoch is still
    the one it took; a deposed holder that wakes up (it was hung, stopped or cut off while another took
    over) finds a newer epoch and its writes are refused."""

    __tablename__ = "lease_epochs"

    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), primary_key=True)
    epoch: Mapped[int] = mapped_column(sa.BigInteger)
    holder: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
