"""The GPU inventory: nodes, their GPUs and topology labels, and the node lifecycle.

Status changes follow ``opscale.db.status.NODE_TRANSITIONS`` and are compare-and-swap on ``version``.
Heartbeats deliberately do not bump ``version``: they arrive every few seconds, and a CAS token that
moves that often would make every cordon or drain by an SRE fail as stale.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from opscale.db.models import ID_LENGTH, KIND_LENGTH, NAME_LENGTH, Gpu, Node
from opscale.db.records import GpuRecord, NodeRecord
from opscale.db.repo._common import (
    RepoBase,
    check_aware,
    check_object,
    check_text,
    check_version,
)
from opscale.db.repo.audit import AuditRepo
from opscale.db.status import NodeStatus, transition
from opscale.errors import FailedPrecondition, InvalidArgument, NotFound, StaleVersion

KIND = "node"

#: A re-registering agent keeps an SRE's cordon or drain; every other status starts over.
_KEEP_ON_REGISTER = frozenset({NodeStatus.CORDONED, NodeStatus.DRAINING, NodeStatus.REGISTERING})


def _gpu_record(gpu: Gpu) -> GpuRecord:
    return GpuRecord(
        index=gpu.index,
        uuid=gpu.uuid,
        gpu_type=gpu.gpu_type,
        memory_bytes=gpu.memory_bytes,
        nvlink_domain=gpu.nvlink_domain,
        labels=gpu.labels,
    )


def _record(row: Node) -> NodeRecord:
    return NodeRecord(
        name=row.name,
        status=row.status,
        labels=row.labels,
        agent_session_id=row.agent_session_id,
        last_heartbeat_at=row.last_heartbeat_at,
        registered_at=row.registered_at,
        status_changed_at=row.status_changed_at,
        version=row.version,
        gpus=tuple(_gpu_record(g) for g in row.gpus),
    )


def _snapshot(record: NodeRecord) -> dict[str, Any]:
    return {
        "status": record.status.value,
        "version": record.version,
        "agent_session_id": record.agent_session_id,
        "labels": dict(record.labels),
        "gpus": [{"index": g.index, "uuid": g.uuid, "gpu_type": g.gpu_type} for g in record.gpus],
    }


def _check_gpus(gpus: Sequence[GpuRecord]) -> None:
    seen: set[int] = set()
    for gpu in gpus:
        if gpu.index < 0 or gpu.index in seen:
            raise InvalidArgument(f"gpus: index {gpu.index} is negative or repeated", field="gpus")
        seen.add(gpu.index)
        if gpu.memory_bytes < 0:
            raise InvalidArgument(f"gpus[{gpu.index}].memory_bytes: must be >= 0", field="gpus")
        check_text(f"gpus[{gpu.index}].uuid", gpu.uuid, ID_LENGTH)
        check_text(f"gpus[{gpu.index}].gpu_type", gpu.gpu_type, KIND_LENGTH)


class NodeRepo(RepoBase):
    @property
    def _audit(self) -> AuditRepo:
        return AuditRepo(self._session, clock=self._clock)

    async def _row(self, name: str, *, lock: bool = False) -> Node | None:
        query = sa.select(Node).where(Node.name == name)
        if lock:
            query = query.with_for_update()
        query = query.options(selectinload(Node.gpus)).execution_options(populate_existing=True)
        return (await self._session.scalars(query)).one_or_none()

    async def _existing(self, name: str, *, lock: bool = False) -> Node:
        row = await self._row(name, lock=lock)
        if row is None:
            raise NotFound(f"node '{name}' not found", field="node")
        return row

    async def get(self, name: str) -> NodeRecord:
        return _record(await self._existing(name))

    async def list(
        self, *, status: NodeStatus | None = None, heartbeat_before: datetime | None = None
    ) -> builtins.list[NodeRecord]:
        """Nodes by name, with their GPUs. ``heartbeat_before`` finds candidates for LOST."""
        query = sa.select(Node).options(selectinload(Node.gpus)).order_by(Node.name)
        if status is not None:
            query = query.where(Node.status == status)
        if heartbeat_before is not None:
            query = query.where(Node.last_heartbeat_at < check_aware("heartbeat_before", heartbeat_before))
        query = query.execution_options(populate_existing=True)
        return [_record(row) for row in (await self._session.scalars(query)).all()]

    async def register(
        self,
        name: str,
        *,
        gpus: Sequence[GpuRecord],
        labels: Mapping[str, Any],
        agent_session_id: str,
        actor: str = "placement",
    ) -> NodeRecord:
        """Insert or refresh a node as its agent (re)connects; replaces its GPU inventory.

        A new node starts REGISTERING. A known one keeps CORDONED/DRAINING (an SRE's decision outlives
        an agent restart) and otherwise goes back to REGISTERING through the transition table, so
        placement reconciles the agent's running processes before placing anything new there.
        """
        check_text("node", name, NAME_LENGTH)
        check_text("agent_session_id", agent_session_id, ID_LENGTH)
        label_doc = check_object("labels", labels)
        _check_gpus(gpus)
        now = self._now()
        inserted = (
            await self._session.execute(
                self._insert(Node)
                .values(
                    name=name,
                    status=NodeStatus.REGISTERING,
                    labels=label_doc,
                    agent_session_id=agent_session_id,
                    last_heartbeat_at=now,
                    registered_at=now,
                    status_changed_at=now,
                    version=1,
                )
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(Node.id)
            )
        ).scalar_one_or_none()
        before = None
        if inserted is None:
            row = await self._existing(name, lock=True)
            before = _record(row)
            status = row.status if row.status in _KEEP_ON_REGISTER else NodeStatus.REGISTERING
            if status != row.status:
                transition(row.status, status, what=f"node {name}")
            swapped = await self._rowcount(
                sa.update(Node)
                .where(Node.id == row.id, Node.version == row.version)
                .values(
                    status=status,
                    labels=label_doc,
                    agent_session_id=agent_session_id,
                    last_heartbeat_at=now,
                    registered_at=now,
                    status_changed_at=now if status != row.status else row.status_changed_at,
                    version=row.version + 1,
                )
            )
            if not swapped:
                raise await self._stale(name, row.version)
            node_id = row.id
        else:
            node_id = inserted
        await self._replace_gpus(node_id, gpus)
        record = await self.get(name)
        action = "register" if before is None else "reregister"
        await self._audit.append(
            actor, action, KIND, name, None if before is None else _snapshot(before), _snapshot(record)
        )
        return record

    async def _replace_gpus(self, node_id: int, gpus: Sequence[GpuRecord]) -> None:
        await self._session.execute(
            sa.delete(Gpu).where(Gpu.node_id == node_id, Gpu.index.not_in([g.index for g in gpus]))
        )
        for gpu in gpus:
            insert = self._insert(Gpu).values(
                node_id=node_id,
                index=gpu.index,
                uuid=gpu.uuid,
                gpu_type=gpu.gpu_type,
                memory_bytes=gpu.memory_bytes,
                nvlink_domain=gpu.nvlink_domain,
                labels=check_object(f"gpus[{gpu.index}].labels", gpu.labels),
            )
            await self._session.execute(
                insert.on_conflict_do_update(
                    index_elements=["node_id", "index"],
                    set_={
                        "uuid": insert.excluded.uuid,
                        "gpu_type": insert.excluded.gpu_type,
                        "memory_bytes": insert.excluded.memory_bytes,
                        "nvlink_domain": insert.excluded.nvlink_domain,
                        "labels": insert.excluded.labels,
                    },
                )
            )

    async def _stale(self, name: str, expected: int) -> StaleVersion:
        actual = (await self._existing(name)).version
        return StaleVersion(
            f"node '{name}' is at version {actual}, not the expected {expected}; re-read it and retry",
            expected=expected,
            actual=actual,
        )

    async def set_status(
        self, name: str, new_status: NodeStatus, expected_version: int, *, actor: str = "placement"
    ) -> NodeRecord:
        """Move the node to ``new_status`` if the table allows it and nobody changed it meanwhile."""
        check_version("expected_version", expected_version)
        check_text("actor", actor, NAME_LENGTH)
        row = await self._existing(name, lock=True)
        if row.version != expected_version:
            raise await self._stale(name, expected_version)
        before = _record(row)
        transition(row.status, new_status, what=f"node {name}")
        swapped = await self._rowcount(
            sa.update(Node)
            .where(Node.id == row.id, Node.version == expected_version)
            .values(status=new_status, status_changed_at=self._now(), version=expected_version + 1)
        )
        if not swapped:
            raise await self._stale(name, expected_version)
        record = await self.get(name)
        await self._audit.append(actor, "set_status", KIND, name, _snapshot(before), _snapshot(record))
        return record

    async def heartbeat(self, name: str, at: datetime, *, agent_session_id: str | None = None) -> None:
        """Stamp ``last_heartbeat_at``. With ``agent_session_id``, only from the session that holds the
        node: a heartbeat from a superseded agent connection is refused, not counted."""
        conditions = [Node.name == name]
        if agent_session_id is not None:
            conditions.append(Node.agent_session_id == agent_session_id)
        stamped = await self._rowcount(
            sa.update(Node).where(*conditions).values(last_heartbeat_at=check_aware("at", at))
        )
        if stamped:
            return
        row = await self._existing(name)
        raise FailedPrecondition(
            f"heartbeat for node '{name}' from agent session {agent_session_id}, but the node is held "
            f"by session {row.agent_session_id}; the agent must register again",
            field="agent_session_id",
        )

    async def heartbeat_many(self, beats: Mapping[str, tuple[str, datetime]]) -> int:
        """Stamp many nodes in one statement: ``{node: (agent_session_id, at)}``. A beat from a session
        that no longer holds its node matches no row and is dropped. Returns the rows stamped."""
        if not beats:
            return 0
        table = cast(sa.Table, Node.__table__)
        statement = (
            sa.update(table)
            .where(table.c.name == sa.bindparam("b_name"))
            .where(table.c.agent_session_id == sa.bindparam("b_session"))
            .values(last_heartbeat_at=sa.bindparam("b_at"))
        )
        params = [
            {"b_name": name, "b_session": session, "b_at": check_aware("at", at)}
            for name, (session, at) in beats.items()
        ]
        connection = await self._session.connection()
        result = await connection.execute(statement, params)
        return int(result.rowcount)
