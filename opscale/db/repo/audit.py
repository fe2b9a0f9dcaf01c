"""The audit log: who changed what, with the object before and after. Append-only."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from opscale.db.models import KIND_LENGTH, NAME_LENGTH, AuditEntry
from opscale.db.records import AuditRecord
from opscale.db.repo._common import RepoBase, check_json, check_limit, check_text


def _record(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        object_kind=row.object_kind,
        object_name=row.object_name,
        before=row.before,
        after=row.after,
    )


class AuditRepo(RepoBase):
    async def append(
        self,
        actor: str,
        action: str,
        kind: str,
        name: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Record one change. ``before`` is None for a creation, ``after`` None for a deletion."""
        row = AuditEntry(
            at=self._now(),
            actor=check_text("actor", actor, NAME_LENGTH),
            action=check_text("action", action, KIND_LENGTH),
            object_kind=check_text("kind", kind, KIND_LENGTH),
            object_name=check_text("name", name, NAME_LENGTH),
            before=None if before is None else check_json("before", dict(before)),
            after=None if after is None else check_json("after", dict(after)),
        )
        self._session.add(row)
        await self._session.flush()
        return _record(row)

    async def list(
        self,
        *,
        kind: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> builtins.list[AuditRecord]:
        """Newest first. Page backwards with ``before_id`` = the last id of the previous page."""
        query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(check_limit(limit))
        if kind is not None:
            query = query.where(AuditEntry.object_kind == kind)
        if name is not None:
            query = query.where(AuditEntry.object_name == name)
        if before_id is not None:
            query = query.where(AuditEntry.id < before_id)
        rows = (await self._session.scalars(query)).all()
        return [_record(row) for row in rows]
