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
        self._rewind: int | None = None  # the lowest floor of watchers the tail has not caught up with
        self._closed = False

    @property
    def watching(self) -> bool:
        return bool(self._subs)

    def take_rewind(self) -> int | None:
        """The newest ledger id as the earliest watcher the tail has not read for yet subscribed (its
        next poll reads from there once), or None."""
        rewind, self._rewind = self._rewind, None
        return rewind

    def subscribe(self, deployments: Collection[str], floor: int) -> Subscription:
        """A watcher; ``floor`` is the ledger's newest id as it subscribed: every later decision reaches
        it, published here or read by the tail from the floor on."""
        sub = Subscription(deployments)
        if self._closed:  # a watch that reached the handler after close(): ends at once, like the others
            sub.closing = True
            sub.queue.put_nowait(None)
            return sub
        self._rewind = floor if self._rewind is None else min(self._rewind, floor)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every watch now (the service is stopping): each gets UNAVAILABLE instead of holding the
        server's shutdown for its whole grace period. A watch that subscribes later ends at once too: its
        call may have been accepted before the server stopped taking calls."""
        self._closed = True
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
            if not self._hub.watching:
                self._watermark = self._anchor = await ledger.max_id()
                return 0
            # A watcher that subscribed before this tail's first poll, or while a poll above moved the
            # anchor past its floor, is owed what came after its floor: read from there once.
            rewind = self._hub.take_rewind()
            if self._watermark is None or (rewind is not None and rewind < self._anchor):
                self._anchor = rewind if rewind is not None else await ledger.max_id()
                self._watermark = max(self._watermark or 0, self._anchor)
            since = max(self._anchor, self._watermark - REWIND_IDS)
            if rewind is not None:
                since = min(since, rewind)
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
