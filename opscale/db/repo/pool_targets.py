"""Pool targets: the latest desired replica count per operator pool (see ``models.PoolTarget``).

``put`` is an upsert that bumps ``version``; the latest ApplyDesired wins (level-triggered), so there is
no expected-version argument: a decision is a fact about the present, not an edit of a read.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from opscale.db.models import DEPLOYMENT_NAME_LENGTH, KIND_LENGTH, NAME_LENGTH, PoolTarget
from opscale.db.records import PoolTargetRecord
from opscale.db.repo._common import RepoBase, check_object, check_text, check_version
from opscale.errors import InvalidArgument


def _record(row: PoolTarget) -> PoolTargetRecord:
    return PoolTargetRecord(
        deployment=row.deployment,
        stage=row.stage,
        operator=row.operator,
        replicas=row.replicas,
        demand=row.demand,
        spec_version=row.spec_version,
        decision_id=row.decision_id,
        version=row.version,
        updated_at=row.updated_at,
    )


class PoolTargetRepo(RepoBase):
    async def put(
        self,
        deployment: str,
        stage: str,
        operator: str,
        *,
        replicas: int,
        demand: Mapping[str, Any],
        spec_version: int,
        decision_id: str | None = None,
    ) -> PoolTargetRecord:
        check_text("deployment", deployment, DEPLOYMENT_NAME_LENGTH)
        check_text("stage", stage, KIND_LENGTH)
        check_text("operator", operator, KIND_LENGTH)
        check_version("spec_version", spec_version)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise InvalidArgument(f"replicas: must be an integer >= 0, got {replicas!r}", field="replicas")
        if decision_id is not None:
            check_text("decision_id", decision_id, NAME_LENGTH)
        doc = check_object("demand", demand)
        now = self._now()
        insert = self._insert(PoolTarget).values(
            deployment=deployment,
            stage=stage,
            operator=operator,
            replicas=replicas,
            demand=doc,
            spec_version=spec_version,
            decision_id=decision_id,
            version=1,
            updated_at=now,
        )
        await self._session.execute(
            insert.on_conflict_do_update(
                index_elements=["deployment", "stage", "operator"],
                set_={
                    "replicas": insert.excluded.replicas,
                    "demand": insert.excluded.demand,
                    "spec_version": insert.excluded.spec_version,
                    "decision_id": insert.excluded.decision_id,
                    "version": PoolTarget.version + 1,
                    "updated_at": insert.excluded.updated_at,
                },
            )
        )
        found = await self.list(deployment=deployment, stage=stage, operator=operator)
        return found[0]

    async def list(
        self, *, deployment: str | None = None, stage: str | None = None, operator: str | None = None
    ) -> builtins.list[PoolTargetRecord]:
        query = sa.select(PoolTarget).order_by(PoolTarget.deployment, PoolTarget.stage, PoolTarget.operator)
        if deployment is not None:
            query = query.where(PoolTarget.deployment == deployment)
        if stage is not None:
            query = query.where(PoolTarget.stage == stage)
        if operator is not None:
            query = query.where(PoolTarget.operator == operator)
        query = query.execution_options(populate_existing=True)
        return [_record(row) for row in (await self._session.scalars(query)).all()]
