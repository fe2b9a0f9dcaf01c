"""Replicas: desired vs. observed state of each placed operator replica.

Both states follow their transition tables; every update is compare-and-swap on ``version`` (the
observed one optionally, since an agent's report is a fact, not a decision built on a read). Changing
the desired state bumps ``generation``: commands carry it and agents ack ``(replica_id, generation)``,
so a late ack for an old intent is recognisable.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from opscale.db.models import DEPLOYMENT_NAME_LENGTH, ID_LENGTH, KIND_LENGTH, Node, Replica
from opscale.db.records import ReplicaRecord, StatusChange
from opscale.db.repo._common import RepoBase, check_text, check_version
from opscale.db.status import ReplicaDesired, ReplicaObserved, transition
from opscale.errors import AlreadyExists, InvalidArgument, NotFound, StaleVersion

#: Enough to explain the present (a replica makes a handful of moves in its life) without growing
#: the row without bound if something flaps.
HISTORY_LIMIT = 50


def _change(entry: dict[str, Any]) -> StatusChange:
    return StatusChange(
        at=datetime.fromisoformat(entry["at"]),
        field=entry["field"],
        old=entry["old"],
        new=entry["new"],
        reason=entry["reason"],
    )


def _record(row: Replica, node: str | None) -> ReplicaRecord:
    return ReplicaRecord(
        id=row.id,
        deployment=row.deployment,
        stage=row.stage,
        operator=row.operator,
        node=node,
        gpu_indices=tuple(row.gpu_indices),
        desired_state=row.desired_state,
        observed_state=row.observed_state,
        generation=row.generation,
        version=row.version,
        status_history=tuple(_change(e) for e in row.status_history),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class ReplicaRepo(RepoBase):
    def _select(self) -> sa.Select[Replica, str]:
        return (
            sa.select(Replica, Node.name)
            .outerjoin(Node, Node.id == Replica.node_id)
            .execution_options(populate_existing=True)
        )

    async def _node_id(self, node: str | None) -> int | None:
        if node is None:
            return None
        found = await self._session.scalar(sa.select(Node.id).where(Node.name == node))
        if found is None:
            raise NotFound(f"node '{node}' not found", field="node")
        return found

    async def create(
        self,
        replica_id: str,
        *,
        deployment: str,
        stage: str,
        operator: str,
        node: str | None,
        gpu_indices: Sequence[int],
    ) -> ReplicaRecord:
        """A newly placed replica: desired RUNNING, observed PENDING, generation 1, version 1."""
        check_text("replica_id", replica_id, ID_LENGTH)
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in gpu_indices):
            raise InvalidArgument("gpu_indices: must be integers >= 0", field="gpu_indices")
        now = self._now()
        inserted = await self._session.execute(
            self._insert(Replica)
            .values(
                id=replica_id,
                deployment=check_text("deployment", deployment, DEPLOYMENT_NAME_LENGTH),
                stage=check_text("stage", stage, KIND_LENGTH),
                operator=check_text("operator", operator, KIND_LENGTH),
                node_id=await self._node_id(node),
                gpu_indices=list(gpu_indices),
                desired_state=ReplicaDesired.RUNNING,
                observed_state=ReplicaObserved.PENDING,
                generation=1,
                version=1,
                status_history=[],
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(Replica.id)
        )
        if inserted.scalar_one_or_none() is None:
            raise AlreadyExists(f"replica '{replica_id}' already exists", field="replica_id")
        return await self.get(replica_id)

    async def get(self, replica_id: str) -> ReplicaRecord:
        found = (await self._session.execute(self._select().where(Replica.id == replica_id))).one_or_none()
        if found is None:
            raise NotFound(f"replica '{replica_id}' not found", field="replica_id")
        return _record(*found)

    async def list(
        self, *, deployment: str | None = None, node: str | None = None, include_stopped: bool = False
    ) -> builtins.list[ReplicaRecord]:
        """By id. Stopped replicas (desired and observed both STOPPED) only when asked for."""
        query = self._select().order_by(Replica.id)
        if deployment is not None:
            query = query.where(Replica.deployment == deployment)
        if node is not None:
            query = query.where(Node.name == node)
        if not include_stopped:
            query = query.where(
                sa.or_(
                    Replica.desired_state != ReplicaDesired.STOPPED,
                    Replica.observed_state != ReplicaObserved.STOPPED,
                )
            )
        return [_record(*found) for found in (await self._session.execute(query))]

    async def _stale(self, replica_id: str, expected: int) -> StaleVersion:
        actual = (await self.get(replica_id)).version
        return StaleVersion(
            f"replica '{replica_id}' is at version {actual}, not the expected {expected}; re-read and retry",
            expected=expected,
            actual=actual,
        )

    async def _write(
        self,
        current: ReplicaRecord,
        expected: int | None,
        field: str,
        old: str,
        new: str,
        reason: str,
        values: dict[str, Any],
    ) -> ReplicaRecord:
        now = self._now()
        entry = {"at": now.isoformat(), "field": field, "old": old, "new": new, "reason": reason}
        row = await self._session.get_one(Replica, current.id)
        history = [*row.status_history, entry][-HISTORY_LIMIT:]
        swapped = await self._rowcount(
            sa.update(Replica)
            .where(Replica.id == current.id, Replica.version == current.version)
            .values(**values, status_history=history, version=current.version + 1, updated_at=now)
        )
        if not swapped:
            raise await self._stale(current.id, current.version if expected is None else expected)
        return await self.get(current.id)

    async def set_desired(
        self, replica_id: str, new: ReplicaDesired, expected_version: int, *, reason: str
    ) -> ReplicaRecord:
        """Change what placement wants; bumps ``generation``."""
        check_version("expected_version", expected_version)
        current = await self.get(replica_id)
        if current.version != expected_version:
            raise await self._stale(replica_id, expected_version)
        transition(current.desired_state, new, what=f"replica {replica_id} desired")
        values = {"desired_state": new, "generation": current.generation + 1}
        return await self._write(
            current, expected_version, "desired", current.desired_state.value, new.value, reason, values
        )

    async def set_observed(
        self, replica_id: str, new: ReplicaObserved, *, reason: str, expected_version: int | None = None
    ) -> ReplicaRecord:
        """Record what the agent reports. Without ``expected_version`` it still cannot lose a
        concurrent write: the update is conditioned on the version it read."""
        current = await self.get(replica_id)
        if expected_version is not None and current.version != check_version(
            "expected_version", expected_version
        ):
            raise await self._stale(replica_id, expected_version)
        transition(current.observed_state, new, what=f"replica {replica_id} observed")
        return await self._write(
            current,
            expected_version,
            "observed",
            current.observed_state.value,
            new.value,
            reason,
            {"observed_state": new},
        )
