"""Deployments and their versioned specs.

Every spec change makes a new row in ``deployment_versions``; ``deployments.current_version`` is the
compare-and-swap token, bumped with ``UPDATE … WHERE current_version = :expected`` so two writers can
never both win. Deletion is soft (see ``opscale.db.models``): a deleted name can be created again and
its version numbers carry on from where they stopped, so ``(name, version)`` is never reused.

``frozen`` stops the autoscaler from changing the deployment's replica counts; it is not part of the
spec, does not bump the version, and does not block spec updates.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from opscale.db.models import DEPLOYMENT_NAME_LENGTH, NAME_LENGTH, Deployment, DeploymentVersion
from opscale.db.records import DeploymentRecord, DeploymentVersionRecord
from opscale.db.repo._common import RepoBase, check_limit, check_object, check_text, check_version
from opscale.db.repo.audit import AuditRepo
from opscale.errors import AlreadyExists, NotFound, StaleVersion

KIND = "deployment"


def _record(row: Deployment, version: DeploymentVersion) -> DeploymentRecord:
    return DeploymentRecord(
        name=row.name,
        version=version.version,
        spec=version.spec,
        frozen=row.frozen,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _snapshot(record: DeploymentRecord) -> dict[str, Any]:
    return {"version": record.version, "frozen": record.frozen, "spec": dict(record.spec)}


class DeploymentRepo(RepoBase):
    @property
    def _audit(self) -> AuditRepo:
        return AuditRepo(self._session, clock=self._clock)

    async def _row(
        self, name: str, *, include_deleted: bool = False, lock: bool = False
    ) -> Deployment | None:
        query = sa.select(Deployment).where(Deployment.name == name)
        if not include_deleted:
            query = query.where(Deployment.deleted_at.is_(None))
        if lock:
            query = (
                query.with_for_update()
            )  # PostgreSQL row lock; SQLite's BEGIN IMMEDIATE already serialises
        query = query.execution_options(populate_existing=True)
        return (await self._session.scalars(query)).one_or_none()

    async def _live(self, name: str) -> Deployment:
        row = await self._row(name)
        if row is None:
            raise NotFound(f"deployment '{name}' not found", field="name")
        return row

    async def _version(self, row: Deployment, version: int) -> DeploymentVersion:
        query = sa.select(DeploymentVersion).where(
            DeploymentVersion.deployment_id == row.id, DeploymentVersion.version == version
        )
        found = (await self._session.scalars(query)).one_or_none()
        if found is None:
            raise NotFound(
                f"deployment '{row.name}' has no version {version} (current is {row.current_version})",
                field="version",
            )
        return found

    async def _stale_or_missing(self, name: str, expected: int) -> StaleVersion | NotFound:
        row = await self._row(name)
        if row is None:
            return NotFound(f"deployment '{name}' not found", field="name")
        return StaleVersion(
            f"deployment '{name}' is at version {row.current_version}, not the expected {expected}; "
            "re-read it and retry",
            expected=expected,
            actual=row.current_version,
        )

    async def _add_version(self, deployment_id: int, version: int, spec: dict[str, Any], actor: str) -> None:
        self._session.add(
            DeploymentVersion(
                deployment_id=deployment_id,
                version=version,
                spec=spec,
                created_at=self._now(),
                created_by=actor,
            )
        )
        await self._session.flush()

    async def create(self, name: str, spec: Mapping[str, Any], actor: str) -> DeploymentRecord:
        """Create ``name`` at version 1 (or, for a deleted name, at its next version)."""
        check_text("name", name, DEPLOYMENT_NAME_LENGTH)
        spec_doc = check_object("spec", spec)
        check_text("actor", actor, NAME_LENGTH)
        now = self._now()
        existing = await self._row(name, include_deleted=True, lock=True)
        if existing is None:
            insert = (
                self._insert(Deployment)
                .values(name=name, current_version=1, frozen=False, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(Deployment.id)
            )
            deployment_id = (await self._session.execute(insert)).scalar_one_or_none()
            version = 1
        elif existing.deleted_at is None:
            deployment_id = None
        else:
            deployment_id, version = existing.id, existing.current_version + 1
            revived = await self._rowcount(
                sa.update(Deployment)
                .where(
                    Deployment.id == existing.id,
                    Deployment.deleted_at.is_not(None),
                    Deployment.current_version == existing.current_version,
                )
                .values(
                    current_version=version, frozen=False, deleted_at=None, created_at=now, updated_at=now
                )
            )
            deployment_id = deployment_id if revived else None
        if deployment_id is None:
            raise AlreadyExists(f"deployment '{name}' already exists", field="name")
        await self._add_version(deployment_id, version, spec_doc, actor)
        record = await self.get(name)
        await self._audit.append(actor, "create", KIND, name, None, _snapshot(record))
        return record

    async def get(self, name: str, version: int | None = None) -> DeploymentRecord:
        """The current spec, or the given historical ``version`` of it."""
        row = await self._live(name)
        return _record(row, await self._version(row, row.current_version if version is None else version))

    async def list(self) -> builtins.list[DeploymentRecord]:
        """Every deployment that is not deleted, with its current spec, by name."""
        query = (
            sa.select(Deployment, DeploymentVersion)
            .join(
                DeploymentVersion,
                sa.and_(
                    DeploymentVersion.deployment_id == Deployment.id,
                    DeploymentVersion.version == Deployment.current_version,
                ),
            )
            .where(Deployment.deleted_at.is_(None))
            .order_by(Deployment.name)
            .execution_options(populate_existing=True)
        )
        return [_record(row, version) for row, version in (await self._session.execute(query))]

    async def update(
        self, name: str, spec: Mapping[str, Any], expected_version: int, actor: str
    ) -> DeploymentRecord:
        """Replace the spec if the deployment is still at ``expected_version``; returns the new version."""
        spec_doc = check_object("spec", spec)
        check_version("expected_version", expected_version)
        check_text("actor", actor, NAME_LENGTH)
        swapped = await self._rowcount(
            sa.update(Deployment)
            .where(
                Deployment.name == name,
                Deployment.deleted_at.is_(None),
                Deployment.current_version == expected_version,
            )
            .values(current_version=Deployment.current_version + 1, updated_at=self._now())
        )
        if not swapped:
            raise await self._stale_or_missing(name, expected_version)
        row = await self._live(name)
        before = _record(row, await self._version(row, expected_version))
        await self._add_version(row.id, expected_version + 1, spec_doc, actor)
        record = await self.get(name)
        await self._audit.append(actor, "update", KIND, name, _snapshot(before), _snapshot(record))
        return record

    async def delete(self, name: str, expected_version: int | None, actor: str) -> None:
        """Soft-delete; with ``expected_version`` only if nobody changed the spec since it was read."""
        check_text("actor", actor, NAME_LENGTH)
        before = await self.get(name)
        conditions = [Deployment.name == name, Deployment.deleted_at.is_(None)]
        if expected_version is not None:
            conditions.append(
                Deployment.current_version == check_version("expected_version", expected_version)
            )
        now = self._now()
        deleted = await self._rowcount(
            sa.update(Deployment).where(*conditions).values(deleted_at=now, updated_at=now)
        )
        if not deleted:
            raise await self._stale_or_missing(name, expected_version or before.version)
        await self._audit.append(actor, "delete", KIND, name, _snapshot(before), None)

    async def set_frozen(self, name: str, frozen: bool, actor: str) -> DeploymentRecord:
        """Freeze (the autoscaler holds the current counts) or unfreeze. A no-op writes nothing."""
        check_text("actor", actor, NAME_LENGTH)
        before = await self.get(name)
        if before.frozen == frozen:
            return before
        await self._rowcount(
            sa.update(Deployment)
            .where(Deployment.name == name, Deployment.deleted_at.is_(None))
            .values(frozen=frozen, updated_at=self._now())
        )
        record = await self.get(name)
        action = "freeze" if frozen else "unfreeze"
        await self._audit.append(actor, action, KIND, name, _snapshot(before), _snapshot(record))
        return record

    async def history(self, name: str, limit: int = 100) -> builtins.list[DeploymentVersionRecord]:
        """Spec versions, newest first; works for deleted deployments too (that is why they are kept)."""
        row = await self._row(name, include_deleted=True)
        if row is None:
            raise NotFound(f"deployment '{name}' not found", field="name")
        query = (
            sa.select(DeploymentVersion)
            .where(DeploymentVersion.deployment_id == row.id)
            .order_by(DeploymentVersion.version.desc())
            .limit(check_limit(limit))
        )
        return [
            DeploymentVersionRecord(
                name=name, version=v.version, spec=v.spec, created_at=v.created_at, created_by=v.created_by
            )
            for v in (await self._session.scalars(query)).all()
        ]
