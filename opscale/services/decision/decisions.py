"""Decision read use cases (transport-free): latest, history pages, one by id, watch.

Every replica serves these, leader or not: they read the ledger (and, for watch, the hub this replica's
loop and ledger tail feed).

A deployment that exists but has no decision yet (its first tick has not come) is FAILED_PRECONDITION,
not NOT_FOUND: NOT_FOUND means the deployment does not exist, and a client (a router polling
GetDecision) should tell "wait" from "wrong name".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.decisions.record import DecisionView, decode
from opscale.errors import FailedPrecondition, NotFound
from opscale.services.decision.ledger import DecisionLedger
from opscale.services.decision.publish import DecisionHub
from opscale.wire.pages import page_size
from opscale.wire.validate import parse_id


@dataclass(frozen=True, slots=True)
class DecisionPage:
    decisions: list[DecisionView]
    next_page_token: str


def _cursor(token: str) -> int | None:
    if not token:
        return None
    return parse_id(token, "page.page_token")


def decision_id(text: str) -> int:
    return parse_id(text, "decision_id")


class DecisionsApp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, hub: DecisionHub) -> None:
        self._sessions = sessions
        self._clock = clock
        self._hub = hub

    async def _exists(self, session: AsyncSession, deployment: str) -> None:
        # An indexed probe, not DeploymentRepo.get: this is GetDecision's hot path and needs no spec.
        if not await DecisionLedger(session).live(deployment):
            raise NotFound(f"deployment '{deployment}' not found", field="deployment")

    async def latest(self, deployment: str) -> DecisionView:
        async with self._sessions() as session:
            await self._exists(session, deployment)
            found = await DecisionLedger(session).latest(deployment)
        if found is None:
            raise FailedPrecondition(
                f"deployment {deployment!r} has no decision yet: its first control tick has not run "
                "(it runs within one interval of creation on the replica that leads it)",
                field="deployment",
            )
        return decode(found)

    async def get(self, deployment: str, decision: int | None) -> DecisionView:
        if decision is None:
            return await self.latest(deployment)
        async with self._sessions() as session:
            await self._exists(session, deployment)
            found = await DecisionLedger(session).get(deployment, decision)
        if found is None:
            raise NotFound(f"deployment {deployment!r} has no decision {decision}", field="decision_id")
        return decode(found)

    async def history(self, deployment: str, size: int, token: str) -> DecisionPage:
        """Newest first; the token is the id to continue below."""
        size = page_size(size, 100)
        before = _cursor(token)
        async with self._sessions() as session:
            await self._exists(session, deployment)
            records = await DecisionLedger(session).page(deployment, size + 1, before)
        more = len(records) > size
        chosen = [decode(r) for r in records[:size]]
        return DecisionPage(chosen, str(chosen[-1].id) if more else "")

    async def watch(self, deployments: Sequence[str], include_current: bool) -> AsyncIterator[DecisionView]:
        """The current decision of each watched deployment (if asked), then every new one, forever.

        Subscribes before reading the current ones, so nothing decided in between is lost; a decision
        already sent as current is not sent again."""
        names = list(dict.fromkeys(deployments))
        async with self._sessions() as session:
            for name in names:
                await self._exists(session, name)
            floor = await DecisionLedger(session).max_id()
            # No await between the read and the subscription: whatever is recorded after the read reaches
            # this watcher, published here or read from the ledger by the tail (which re-reads from the
            # floor down), each id once.
            sub = self._hub.subscribe(names, floor)
        sent: dict[str, int] = {}
        try:
            if include_current:
                async with self._sessions() as session:
                    ledger = DecisionLedger(session)
                    wanted = names or [h.name for h in await ledger.heads()]
                    current = [await ledger.latest(n) for n in wanted]
                for record in current:
                    if record is not None:
                        view = decode(record)
                        sent[view.deployment] = view.id
                        yield view
            while True:
                view = await sub.next()
                if view.id > sent.get(view.deployment, 0):
                    yield view
        finally:
            self._hub.unsubscribe(sub)
