"""The decision service's reads and writes of the ledger beyond ``DecisionRepo``'s: one decision by id,
id-cursor pages, the tail after an id (watch fan-out across replicas), the placement outcome, and the
cheap "which deployments exist, at which version" the loop asks every tick.

A repository like those in ``opscale.db.repo``: it takes a session; callers own the transaction.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from opscale.db.models import DEPLOYMENT_NAME_LENGTH, KIND_LENGTH, NAME_LENGTH, Decision, Deployment
from opscale.db.records import DecisionRecord
from opscale.db.repo import DecisionRepo
from opscale.db.repo._common import (
    check_aware,
    check_json,
    check_limit,
    check_object,
    check_text,
    check_version,
)
from opscale.db.repo.decisions import _record


@dataclass(frozen=True, slots=True)
class DeploymentHead:
    name: str
    version: int
    frozen: bool


class DuplicateTick(Exception):
    """Another replica already recorded this deployment's decision for this tick."""


class DecisionLedger(DecisionRepo):
    async def heads(self) -> builtins.list[DeploymentHead]:
        """Every live deployment's name, current spec version and freeze flag, without the specs."""
        rows = await self._session.execute(
            sa.select(Deployment.name, Deployment.current_version, Deployment.frozen)
            .where(Deployment.deleted_at.is_(None))
            .order_by(Deployment.name)
        )
        return [DeploymentHead(name, version, frozen) for name, version, frozen in rows]

    async def live(self, name: str) -> bool:
        """Whether ``name`` is a deployment that exists (not deleted); reads no spec."""
        query = sa.select(Deployment.id).where(Deployment.name == name, Deployment.deleted_at.is_(None))
        return (await self._session.execute(query)).first() is not None

    @staticmethod
    def values(decision: DecisionRecord) -> dict[str, Any]:
        """The row for ``decision``, checked as ``DecisionRepo.append`` checks it (``InvalidArgument``)."""
        return {
            "deployment": check_text("deployment", decision.deployment, DEPLOYMENT_NAME_LENGTH),
            "spec_version": check_version("spec_version", decision.spec_version),
            "tick_at": check_aware("tick_at", decision.tick_at),
            "policy": check_text("policy", decision.policy, KIND_LENGTH),
            "policy_version": check_text("policy_version", decision.policy_version, KIND_LENGTH),
            "inputs": check_object("inputs", decision.inputs),
            "outputs": check_object("outputs", decision.outputs),
            "reasons": check_json("reasons", list(decision.reasons)),
            "predicted": check_object("predicted", decision.predicted),
            "stabilizer": check_object("stabilizer", decision.stabilizer),
            "leader_id": check_text("leader_id", decision.leader_id, NAME_LENGTH),
        }

    async def record_many(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert one tick's decisions (rows from ``values``, at most one per deployment) in one
        statement; returns deployment -> new id. A deployment missing from the answer already had a
        decision for that tick (another replica's): the unique index skipped it (``ON CONFLICT DO
        NOTHING``), with no racing pre-check and no failed statement to poison the transaction."""
        if not rows:
            return {}
        statement = (
            self._insert(Decision)
            .on_conflict_do_nothing(index_elements=["deployment", "tick_at"])
            .returning(Decision.deployment, Decision.id)
        )
        result = await self._session.execute(statement, list(rows))
        return {str(deployment): int(new_id) for deployment, new_id in result}

    async def record(self, decision: DecisionRecord) -> DecisionRecord:
        """One decision; ``DuplicateTick`` if its (deployment, tick) is taken."""
        ids = await self.record_many([self.values(decision)])
        if decision.deployment not in ids:
            raise DuplicateTick(f"{decision.deployment} already has a decision at {decision.tick_at}")
        return dataclasses.replace(decision, id=ids[decision.deployment])

    async def get(self, deployment: str, decision_id: int) -> DecisionRecord | None:
        row = await self._session.get(Decision, decision_id)
        return _record(row) if row is not None and row.deployment == deployment else None

    async def page(self, deployment: str, limit: int, before_id: int | None) -> builtins.list[DecisionRecord]:
        """Newest first by id (ids grow with time per deployment: one leader writes them in order)."""
        query = (
            sa.select(Decision)
            .where(Decision.deployment == deployment)
            .order_by(Decision.id.desc())
            .limit(max(1, limit))  # callers ask one more than a page to know whether another follows
        )
        if before_id is not None:
            query = query.where(Decision.id < before_id)
        return [_record(row) for row in (await self._session.scalars(query)).all()]

    async def after(
        self, after_id: int, limit: int, deployments: Sequence[str] = ()
    ) -> builtins.list[DecisionRecord]:
        """Oldest first, ids above ``after_id`` (optionally of some deployments only)."""
        query = (
            sa.select(Decision).where(Decision.id > after_id).order_by(Decision.id).limit(check_limit(limit))
        )
        if deployments:
            query = query.where(Decision.deployment.in_(list(deployments)))
        return [_record(row) for row in (await self._session.scalars(query)).all()]

    async def max_id(self) -> int:
        return int((await self._session.execute(sa.select(sa.func.max(Decision.id)))).scalar_one() or 0)

    async def set_outputs(self, decision: DecisionRecord) -> None:
        """Rewrite a stored decision's ``outputs`` (only the placement outcome ever changes)."""
        await self._session.execute(
            sa.update(Decision).where(Decision.id == decision.id).values(outputs=dict(decision.outputs))
        )
