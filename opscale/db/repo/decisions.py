"""The decision ledger: one row per deployment per control tick, append-only.

It holds what a decision was made from (inputs, spec version, policy and its version) and what came
out (outputs, reasons, predictions, stabilizer effects), so ``opscale explain`` can answer "why" and a
tick can be replayed offline through the same pure policy code.
"""

from __future__ import annotations

import builtins
import dataclasses
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from opscale.db.models import DEPLOYMENT_NAME_LENGTH, KIND_LENGTH, NAME_LENGTH, Decision
from opscale.db.records import DecisionRecord
from opscale.db.repo._common import (
    RepoBase,
    check_aware,
    check_json,
    check_limit,
    check_object,
    check_text,
    check_version,
)
from opscale.errors import InvalidArgument


def _record(row: Decision) -> DecisionRecord:
    return DecisionRecord(
        id=row.id,
        deployment=row.deployment,
        spec_version=row.spec_version,
        tick_at=row.tick_at,
        policy=row.policy,
        policy_version=row.policy_version,
        inputs=row.inputs,
        outputs=row.outputs,
        reasons=row.reasons,
        predicted=row.predicted,
        stabilizer=row.stabilizer,
        leader_id=row.leader_id,
    )


def _reasons(reasons: Any) -> list[str]:
    if isinstance(reasons, str) or not all(isinstance(r, str) for r in reasons):
        raise InvalidArgument("reasons: must be a list of strings", field="reasons")
    return cast(list[str], check_json("reasons", list(reasons)))


class DecisionRepo(RepoBase):
    async def append(self, decision: DecisionRecord) -> DecisionRecord:
        """Store one tick's decision; returns it with its ledger ``id``."""
        row = Decision(
            deployment=check_text("deployment", decision.deployment, DEPLOYMENT_NAME_LENGTH),
            spec_version=check_version("spec_version", decision.spec_version),
            tick_at=check_aware("tick_at", decision.tick_at),
            policy=check_text("policy", decision.policy, KIND_LENGTH),
            policy_version=check_text("policy_version", decision.policy_version, KIND_LENGTH),
            inputs=check_object("inputs", decision.inputs),
            outputs=check_object("outputs", decision.outputs),
            reasons=_reasons(decision.reasons),
            predicted=check_object("predicted", decision.predicted),
            stabilizer=check_object("stabilizer", decision.stabilizer),
            leader_id=check_text("leader_id", decision.leader_id, NAME_LENGTH),
        )
        self._session.add(row)
        await self._session.flush()
        return dataclasses.replace(decision, id=row.id)

    async def latest(self, deployment: str) -> DecisionRecord | None:
        """The newest decision for ``deployment``, or None before its first tick."""
        found = await self.history(deployment, limit=1)
        return found[0] if found else None

    async def history(
        self, deployment: str, limit: int = 100, before_tick: datetime | None = None
    ) -> builtins.list[DecisionRecord]:
        """Newest first; ``before_tick`` (exclusive) pages back in time."""
        query = (
            sa.select(Decision)
            .where(Decision.deployment == deployment)
            # id breaks ties between two rows of one tick (a leader hand-over can write both).
            .order_by(Decision.tick_at.desc(), Decision.id.desc())
            .limit(check_limit(limit))
        )
        if before_tick is not None:
            query = query.where(Decision.tick_at < check_aware("before_tick", before_tick))
        return [_record(row) for row in (await self._session.scalars(query)).all()]

    async def prune(self, older_than: datetime) -> int:
        """Delete decisions with ``tick_at`` before ``older_than`` (retention); returns how many."""
        return await self._rowcount(
            sa.delete(Decision).where(Decision.tick_at < check_aware("older_than", older_than))
        )
