"""Fan-out of new decisions to ``WatchDecisions`` streams, on every decision replica.

- ``DecisionHub``: in-process pub/sub. The loop publishes each decision it makes (after placement
  answered, so watchers see the outcome); every open stream on this replica holds a bounded queue. A
  watcher that falls ``QUEUE_SIZE`` decisions behind is dropped (its stream ends with
  RESOURCE_EXHAUSTED; it reconnects with ``include_current``) rather than letting memory grow.
- ``LedgerTail``: decisions made by *other* replicas reach this one's watchers through the ledger. While
  any watcher is open, it polls for rows above the highest id it has seen. Ids come from one sequence but
  concurrent leaders may commit them out of order, so each poll re-reads the last ``REWIND_IDS`` ids and
  the hub drops ids it already delivered. A row still PENDING placement is held back for up to
  ``PENDING_POLLS`` polls so that watchers get the outcome, as they do from the local loop.

Polling works on both backends and needs nothing beyond the database every replica already has; Redis
pub/sub would cut the latency (one poll interval, 0.2 s by default) where Redis is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.actuation import Outcome
from opscale.decisions.record import DecisionView, decode
from opscale.errors import ResourceExhausted, Unavailable
from opscale.outage import OUTAGE_ERRORS, Outage
from opscale.services.decision.ledger import DecisionLedger

log = logging.getLogger(__name__)

_TAIL_OUTAGE: tuple[type[Exception], ...] = (SQLAlchemyError, *OUTAGE_ERRORS)

QUEUE_SIZE = 1000
SEEN_IDS = 4096  # per watcher: well beyond the tail's re-read window
REWIND_IDS = 256
PENDING_POLLS = 5
POLL_LIMIT = 1000

Pace = Callable[[float], Awaitable[None]]


class Subscription:
    def __init__(self, deployments: Collection[str]) -> None:
        self.deployments = frozenset(deployments)
        self.floor = 0  # the newest ledger id when it subscribed: the tail never re-reads from above it
        self._seen: OrderedDict[int, None] = OrderedDict()  # ids delivered (local publish + tail re-reads)
        self.queue: asyncio.Queue[DecisionView | None] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False
        self.closing = False

    def wants(self, view: DecisionView) -> bool:
        return view.id not in self._seen and (not self.deployments or view.deployment in self.deployments)

    def seen(self, view: DecisionView) -> None:
        self._seen[view.id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    async def next(self) -> DecisionView:
        view = await self.queue.get()
        if view is None and self.closing:
            # UNAVAILABLE: watch again, here once restarted or on another replica.
            raise Unavailable("this decision replica is shutting down; watch again with include_current")
        if view is None:
            raise ResourceExhausted(
                f"this watcher fell more than {QUEUE_SIZE} decisions behind and was dropped; "
                "watch again with include_current"
            )
        return view


class DecisionHub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    @property
    def watching(self) -> bool:
        return bool(self._subs)

    def floor(self) -> int | None:
        """The oldest ledger id a watcher subscribed after (None: nobody watches)."""
        return min((sub.floor for sub in self._subs), default=None)

    def subscribe(self, deployments: Collection[str], floor: int) -> Subscription:
        sub = Subscription(deployments)
        sub.floor = floor
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every watch now (the service is stopping): each gets UNAVAILABLE instead of holding the
        server's shutdown for its whole grace period."""
        for sub in list(self._subs):
            sub.closing = True
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    def publish(self, view: DecisionView) -> None:
        """Deliver ``view`` once to every matching watcher (a second publish of one id to a watcher that
        has it is ignored; one that subscribed since gets it)."""
        for sub in list(self._subs):
            if not sub.wants(view):
                continue
            sub.seen(view)
            try:
                sub.queue.put_nowait(view)
            except asyncio.QueueFull:
                self._subs.discard(sub)
                sub.overflowed = True
                sub.queue.get_nowait()  # make room for the sentinel
                sub.queue.put_nowait(None)


class LedgerTail:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], hub: DecisionHub, pace: Pace, poll_s: float = 0.2
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._pace = pace
        self._poll_s = poll_s
        self._outage = Outage("decision ledger tail: the database is unavailable", log)
        self._watermark: int | None = None
        self._anchor = 0
        self._pending: dict[int, int] = {}

    async def poll_once(self) -> int:
        """One poll; returns how many decisions it handed to the hub. While nobody watches it only moves
        its anchor to the newest id (one indexed MAX), so a new watcher gets no decision from before it
        subscribed beyond one poll interval."""
        async with self._sessions() as session:
            ledger = DecisionLedger(session)
            floor = self._hub.floor()
            if floor is None:
                self._watermark = self._anchor = await ledger.max_id()
                return 0
            if self._watermark is None:
                self._watermark = self._anchor = floor
            # Never past what a watcher has not seen: one may have subscribed (its floor read) before a
            # poll that moved the anchor to a newer id, or before this tail's first poll.
            since = min(max(self._anchor, self._watermark - REWIND_IDS), floor)
            rows = await ledger.after(since, POLL_LIMIT)
        published = 0
        for record in rows:
            view = decode(record)
            self._watermark = max(self._watermark, view.id)
            if view.placement == Outcome.PENDING:
                polls = self._pending.get(view.id, 0) + 1
                if polls < PENDING_POLLS:
                    self._pending[view.id] = polls
                    continue
            self._pending.pop(view.id, None)
            self._hub.publish(view)
            published += 1
        floor = self._watermark - REWIND_IDS
        self._pending = {i: n for i, n in self._pending.items() if i > floor}
        return published

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.poll_once()
                self._outage.ok()
            except _TAIL_OUTAGE as exc:  # the database is away: keep polling
                self._outage.failed(exc)
            await self._pace(self._poll_s)
