"""Pools below their target for a known reason: never silent.

A pool can stay short of its target for long: no node has room for it (infeasible), every agent refuses
or fails its starts (and placement retires those replicas again), or re-placement is held back after
repeated failures. Each of those is noted here with its reason as it happens (``note``); once per
reconcile pass ``assess`` compares every pool target with the READY replicas and says which shortfalls
opened, changed reason or closed. The reconciler turns those into one log line and one audit event each
(not one per pass), the metrics gauge carries the count, and ``GetReplicas`` returns the open ones, which
``opscale describe deployment`` shows.

A pool merely starting its replicas (short, but for no reason noted) is not a shortfall here; the
``opscale_placement_pool_shortfall_replicas`` gauge still counts it, since it is short.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from opscale.db.records import PoolTargetRecord, ReplicaRecord
from opscale.db.status import ReplicaDesired, ReplicaObserved
from opscale.placement import Infeasible

PoolId = tuple[str, str, str]  # deployment, stage, operator


@dataclass(frozen=True, slots=True)
class Shortfall:
    deployment: str
    stage: str
    operator: str
    target: int
    ready: int
    reason: str
    since: datetime

    @property
    def pool(self) -> PoolId:
        return (self.deployment, self.stage, self.operator)

    def describe(self) -> str:
        return (
            f"pool {self.deployment} {self.stage}/{self.operator} runs {self.ready} of {self.target} "
            f"replicas: {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    opened: tuple[Shortfall, ...]  # new, or the reason changed
    closed: tuple[Shortfall, ...]  # the pool reached its target (or lost it)
    short: dict[PoolId, int]  # every targeted pool: target − READY, at least 0


class Shortfalls:
    def __init__(self) -> None:
        self._reasons: dict[PoolId, str] = {}
        self._short: dict[PoolId, int] = {}  # as of the last assessment
        self.open: dict[PoolId, Shortfall] = {}

    def note(self, pool: PoolId, reason: str) -> None:
        """Why ``pool`` is (or is about to be) short; the latest reason wins."""
        self._reasons[pool] = reason

    def note_infeasible(self, items: Iterable[Infeasible]) -> None:
        for item in items:
            self.note(
                (item.deployment, item.stage, item.operator),
                f"placement fits {item.placed} of {item.requested}: {item.reason}",
            )

    def short_pools(self, deployment: str) -> list[PoolId]:
        return [k for k, n in self._short.items() if n and k[0] == deployment]

    def assess(
        self, targets: Iterable[PoolTargetRecord], replicas: Iterable[ReplicaRecord], now: datetime
    ) -> Assessment:
        ready: dict[PoolId, int] = {}
        for r in replicas:
            if r.desired_state is ReplicaDesired.RUNNING and r.observed_state is ReplicaObserved.READY:
                key = (r.deployment, r.stage, r.operator)
                ready[key] = ready.get(key, 0) + 1
        opened: list[Shortfall] = []
        short: dict[PoolId, int] = {}
        still: dict[PoolId, Shortfall] = {}
        for t in targets:
            key = (t.deployment, t.stage, t.operator)
            have = ready.get(key, 0)
            short[key] = max(0, t.replicas - have)
            reason = self._reasons.get(key)
            if short[key] == 0 or reason is None:
                self._reasons.pop(key, None)  # met (or no reason known): the next shortfall starts afresh
                continue
            was = self.open.get(key)
            if was is None or was.reason != reason:
                item = Shortfall(*key, target=t.replicas, ready=have, reason=reason, since=now)
                opened.append(item)
            else:
                item = replace(was, target=t.replicas, ready=have)
            still[key] = item
        closed = tuple(s for k, s in self.open.items() if k not in still)
        for key in set(self._reasons) - set(short):
            del self._reasons[key]  # the pool target is gone
        self.open, self._short = still, short
        return Assessment(tuple(opened), closed, short)

    def of(self, deployment: str) -> list[Shortfall]:
        return sorted(
            (s for s in self.open.values() if not deployment or s.deployment == deployment),
            key=lambda s: s.pool,
        )
