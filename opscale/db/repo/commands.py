"""Commands to node agents, with idempotency keys.

Enqueueing the same key twice returns the first command (a retried reconcile pass is a no-op);
reusing a key for a different command is refused. Queueing generation *g* for a replica supersedes
its older commands that have not been acked, so an agent never acts on an intent that was replaced.
Status moves follow ``COMMAND_TRANSITIONS``, and each is compare-and-swap on the status read.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from opscale.db.models import ID_LENGTH, NAME_LENGTH, Command, Node
from opscale.db.records import CommandRecord
from opscale.db.repo._common import (
    RepoBase,
    check_aware,
    check_limit,
    check_object,
    check_text,
    check_version,
)
from opscale.db.status import CommandKind, CommandStatus, transition
from opscale.errors import AlreadyExists, NotFound, StaleVersion

_OPEN = (CommandStatus.PENDING, CommandStatus.SENT)


def _record(row: Command, node: str) -> CommandRecord:
    return CommandRecord(
        id=row.id,
        idempotency_key=row.idempotency_key,
        node=node,
        replica_id=row.replica_id,
        generation=row.generation,
        kind=row.kind,
        status=row.status,
        attempts=row.attempts,
        payload=row.payload,
        created_at=row.created_at,
        sent_at=row.sent_at,
        acked_at=row.acked_at,
        error=row.error,
    )


class CommandRepo(RepoBase):
    def _select(self) -> sa.Select[Command, str]:
        return (
            sa.select(Command, Node.name)
            .join(Node, Node.id == Command.node_id)
            .execution_options(populate_existing=True)
        )

    async def _one(self, condition: sa.ColumnElement[bool], what: str) -> CommandRecord:
        found = (await self._session.execute(self._select().where(condition))).one_or_none()
        if found is None:
            raise NotFound(f"command {what} not found", field="command")
        return _record(*found)

    async def get(self, command_id: int) -> CommandRecord:
        return await self._one(Command.id == command_id, str(command_id))

    async def enqueue(
        self,
        idempotency_key: str,
        *,
        node: str,
        replica_id: str,
        generation: int,
        kind: CommandKind,
        payload: Mapping[str, Any],
    ) -> CommandRecord:
        """Queue a command (PENDING), or return the one already queued under ``idempotency_key``."""
        check_text("idempotency_key", idempotency_key, NAME_LENGTH)
        check_text("replica_id", replica_id, ID_LENGTH)
        check_version("generation", generation)
        payload_doc = check_object("payload", payload)
        node_id = await self._session.scalar(sa.select(Node.id).where(Node.name == node))
        if node_id is None:
            raise NotFound(f"node '{node}' not found", field="node")
        inserted = (
            await self._session.execute(
                self._insert(Command)
                .values(
                    idempotency_key=idempotency_key,
                    node_id=node_id,
                    replica_id=replica_id,
                    generation=generation,
                    kind=kind,
                    status=CommandStatus.PENDING,
                    attempts=0,
                    payload=payload_doc,
                    created_at=self._now(),
                )
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(Command.id)
            )
        ).scalar_one_or_none()
        if inserted is None:
            existing = await self._one(Command.idempotency_key == idempotency_key, f"'{idempotency_key}'")
            if (existing.node, existing.replica_id, existing.generation, existing.kind) != (
                node,
                replica_id,
                generation,
                kind,
            ):
                raise AlreadyExists(
                    f"idempotency_key '{idempotency_key}' was already used for a different command "
                    f"({existing.kind.value} replica {existing.replica_id} generation {existing.generation})",
                    field="idempotency_key",
                )
            return existing
        await self._rowcount(
            sa.update(Command)
            .where(
                Command.replica_id == replica_id,
                Command.generation < generation,
                Command.status.in_(_OPEN),
            )
            .values(status=CommandStatus.SUPERSEDED)
        )
        return await self.get(inserted)

    async def pending(self, node: str, limit: int = 100) -> builtins.list[CommandRecord]:
        """PENDING commands for ``node``, oldest first: what to put on its stream next."""
        query = (
            self._select()
            .where(Node.name == node, Command.status == CommandStatus.PENDING)
            .order_by(Command.id)
            .limit(check_limit(limit))
        )
        return [_record(*found) for found in (await self._session.execute(query))]

    async def pending_nodes(self) -> builtins.set[str]:
        """Nodes with PENDING commands (what a placement leader checks for writes made elsewhere)."""
        query = (
            sa.select(Node.name)
            .distinct()
            .join(Command, Node.id == Command.node_id)
            .where(Command.status == CommandStatus.PENDING)
        )
        return set((await self._session.scalars(query)).all())

    async def set_status(
        self, command_id: int, new: CommandStatus, *, error: str | None = None
    ) -> CommandRecord:
        """Move a command along its lifecycle. SENT counts an attempt and stamps ``sent_at``; ACKED
        stamps ``acked_at``. Raises ``StaleVersion`` if its status changed since it was read."""
        current = await self.get(command_id)
        transition(current.status, new, what=f"command {command_id}")
        now = self._now()
        values: dict[str, Any] = {"status": new, "error": error}
        if new is CommandStatus.SENT:
            values |= {"sent_at": now, "attempts": current.attempts + 1}
        if new is CommandStatus.ACKED:
            values["acked_at"] = now
        swapped = await self._rowcount(
            sa.update(Command)
            .where(Command.id == command_id, Command.status == current.status)
            .values(**values)
        )
        if not swapped:
            actual = await self.get(command_id)
            raise StaleVersion(
                f"command {command_id} changed from '{current.status.value}' to '{actual.status.value}' "
                "meanwhile; re-read and retry",
            )
        return await self.get(command_id)

    async def unacked(
        self, *, node: str | None = None, sent_before: datetime | None = None, limit: int = 1000
    ) -> builtins.list[CommandRecord]:
        """SENT commands not yet acknowledged, oldest first: the reconciler re-sends those older than its
        timeout, and a re-registering agent gets all of its node's again (agents dedupe by generation)."""
        query = self._select().where(Command.status == CommandStatus.SENT)
        if node is not None:
            query = query.where(Node.name == node)
        if sent_before is not None:
            query = query.where(Command.sent_at < check_aware("sent_before", sent_before))
        query = query.order_by(Command.id).limit(check_limit(limit))
        return [_record(*found) for found in (await self._session.execute(query))]
