"""Operator performance profiles, one per (model, GPU type, stage, operator kind).

The profile document's format belongs to ``opscale.model``; this layer stores it as JSON and keeps
where it came from (``source``: a shipped file, a profiler run, a roofline scaling).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from opscale.db.models import KIND_LENGTH, NAME_LENGTH, OperatorProfile
from opscale.db.records import OperatorProfileRecord
from opscale.db.repo._common import RepoBase, check_object, check_text
from opscale.errors import NotFound


def _record(row: OperatorProfile) -> OperatorProfileRecord:
    return OperatorProfileRecord(
        model=row.model,
        gpu_type=row.gpu_type,
        stage=row.stage,
        operator=row.operator,
        profile=row.profile,
        source=row.source,
        created_at=row.created_at,
    )


class ProfileRepo(RepoBase):
    async def put(
        self, *, model: str, gpu_type: str, stage: str, operator: str, profile: Mapping[str, Any], source: str
    ) -> OperatorProfileRecord:
        """Insert, or replace the profile stored under the same four-part key."""
        insert = self._insert(OperatorProfile).values(
            model=check_text("model", model, NAME_LENGTH),
            gpu_type=check_text("gpu_type", gpu_type, KIND_LENGTH),
            stage=check_text("stage", stage, KIND_LENGTH),
            operator=check_text("operator", operator, KIND_LENGTH),
            profile=check_object("profile", profile),
            source=check_text("source", source, NAME_LENGTH),
            created_at=self._now(),
        )
        await self._session.execute(
            insert.on_conflict_do_update(
                index_elements=["model", "gpu_type", "stage", "operator"],
                set_={
                    "profile": insert.excluded.profile,
                    "source": insert.excluded.source,
                    "created_at": insert.excluded.created_at,
                },
            )
        )
        return await self.get(model=model, gpu_type=gpu_type, stage=stage, operator=operator)

    async def get(self, *, model: str, gpu_type: str, stage: str, operator: str) -> OperatorProfileRecord:
        query = (
            sa.select(OperatorProfile)
            .where(
                OperatorProfile.model == model,
                OperatorProfile.gpu_type == gpu_type,
                OperatorProfile.stage == stage,
                OperatorProfile.operator == operator,
            )
            .execution_options(populate_existing=True)
        )
        row = (await self._session.scalars(query)).one_or_none()
        if row is None:
            raise NotFound(f"no profile for {model} {stage}/{operator} on {gpu_type}", field="profile")
        return _record(row)

    async def list(
        self, *, model: str | None = None, gpu_type: str | None = None
    ) -> builtins.list[OperatorProfileRecord]:
        query = sa.select(OperatorProfile).order_by(
            OperatorProfile.model, OperatorProfile.gpu_type, OperatorProfile.stage, OperatorProfile.operator
        )
        if model is not None:
            query = query.where(OperatorProfile.model == model)
        if gpu_type is not None:
            query = query.where(OperatorProfile.gpu_type == gpu_type)
        query = query.execution_options(populate_existing=True)
        return [_record(row) for row in (await self._session.scalars(query)).all()]
