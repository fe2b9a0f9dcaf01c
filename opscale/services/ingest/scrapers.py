"""Running the scrapers of one ingest process: which targets it owns, when it scrapes them, and
picking up a changed targets file.

A scraper is anything with a ``key``, an ``interval_s`` and ``scrape_once()`` — an engine endpoint
(``scrape.EndpointScraper``) or a Prometheus source (``prometheus.PrometheusScraper``). All run from
one scheduler (``step``), on the monotonic clock without drift, and scrapes only while this replica
owns its key (``Membership``, rendezvous hashing over the live replicas; see ``shard``). When a
membership change hands it a key, that key is due at once rather than at its next tick, so a dead
replica's targets are scraped again within ``ttl_s + beat_s`` = 1.75 scrape intervals.

With the in-process state store (the embedded default: one replica) membership is off and this
process owns every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from opscale.clock import Clock
from opscale.config import ScrapeTarget
from opscale.errors import ConfigError, OpscaleError
from opscale.outage import Outage
from opscale.services.ingest.shard import ScrapeState, owner
from opscale.services.ingest.targets import TargetsFile, all_targets

log = logging.getLogger(__name__)


class Scraper(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    async def scrape_once(self) -> bool: ...


def member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Membership:
    """This replica's view of the live scraper replicas. ``ttl_s`` = 1.5 and ``beat_s`` = 0.25 scrape
    intervals: an entry survives five missed beats, and a dead replica's keys move within 1.75."""

    def __init__(
        self, state: ScrapeState, clock: Clock, *, interval_s: float, sharded: bool, member: str | None = None
    ) -> None:
        self.member = member or member_id()
        self.sharded = sharded
        self.ttl_s = 1.5 * interval_s
        self.beat_s = interval_s / 4
        self.view: tuple[str, ...] = (self.member,)
        self._state = state
        self._clock = clock
        self._outage = Outage("ingest: scrape membership not renewed", log, extra={"service": "ingest"})

    def owns(self, key: str) -> bool:
        return not self.sharded or owner(key, self.view) == self.member

    async def beat(self) -> bool:
        """Renew our entry and refresh the view; True if the view changed. A store that cannot be
        reached keeps the last view (its counter writes fail as well, so nothing is written twice)."""
        if not self.sharded:
            return False
        try:
            live = await self._state.beat(self.member, now_s=self._clock.now(), ttl_s=self.ttl_s)
        except OpscaleError as exc:
            self._outage.failed(exc)
            return False
        self._outage.ok()
        view = tuple(live) if self.member in live else tuple(sorted({*live, self.member}))
        changed, self.view = view != self.view, view
        return changed

    async def leave(self) -> None:
        if self.sharded:
            await self._state.leave(self.member)


MakeScrapers = Callable[[list[ScrapeTarget]], list[Scraper]]


def _spec(scraper: Scraper) -> object:
    return getattr(scraper, "spec", None)


def _offset(key: str) -> float:
    """A stable fraction of the interval by which a key's first scrape is put off, so that the
    targets of one process are scraped spread over the interval rather than all at once (what
    Prometheus does with its scrape offsets)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=2).digest()) / 65536


class ScrapeManager:
    def __init__(
        self,
        membership: Membership,
        clock: Clock,
        make: MakeScrapers,
        *,
        static_targets: Sequence[ScrapeTarget],
        extra: Sequence[Scraper] = (),
        targets_file: TargetsFile | None = None,
        default_interval_s: float,
    ) -> None:
        self.membership = membership
        self._clock = clock
        self._make = make
        self._static = list(static_targets)
        self._extra = list(extra)
        self._file = targets_file
        self._default_interval_s = default_interval_s
        self.scrapers: dict[str, Scraper] = {s.key: s for s in [*make(self._static), *self._extra]}
        self._next: dict[str, float] = {}  # monotonic time each scraper is due
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._next_beat = -math.inf
        self._next_poll = -math.inf

    def reload(self) -> bool:
        """Re-read the targets file if it changed; True if the scrapers changed. A wrong file is
        logged and the targets in force stay. Endpoints whose spec did not change keep their scraper
        (and its health and task)."""
        if self._file is None or not self._file.changed():
            return False
        try:
            fresh = self._make(all_targets(self._static, self._file.load()))
        except ConfigError as exc:
            log.error("scrape targets file %s refused: %s", self._file.path, exc, extra={"service": "ingest"})
            return False
        merged: dict[str, Scraper] = {}
        for s in [*fresh, *self._extra]:
            old = self.scrapers.get(s.key)
            merged[s.key] = old if old is not None and _spec(old) == _spec(s) else s
        changed = merged.keys() != self.scrapers.keys() or any(
            merged[k] is not self.scrapers[k] for k in merged
        )
        self.scrapers = merged
        if changed:
            log.info(
                "scrape targets: %d scrapers after reading %s",
                len(merged),
                self._file.path,
                extra={"service": "ingest"},
            )
        return changed

    def owned(self) -> set[str]:
        return {k for k in self.scrapers if self.membership.owns(k)}

    async def _scrape(self, scraper: Scraper) -> None:
        try:
            await scraper.scrape_once()
        except Exception:  # a bug in one scraper must not stop the others or the service
            log.exception("scraper %s failed unexpectedly", scraper.key, extra={"service": "ingest"})

    def _done(self, key: str, _: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)

    async def step(self, *, wait: bool = False) -> float:
        """Do what is due now: renew membership (every ``beat_s``; a key just gained is due at once),
        re-read the targets file (every second), start the due scrapes of owned keys (each key at most
        one at a time: a scrape still running at its next slot skips that slot). A key's first slot is
        put off by a stable fraction of its interval (``_offset``).
        ``wait``: also wait for the scrapes started (tests step a virtual clock so). Returns the
        monotonic time when something is next due."""
        now = self._clock.monotonic()
        if now >= self._next_beat:
            before = self.owned()
            await self.membership.beat()
            for key in self.owned() - before:
                self._next[key] = now
            self._next_beat = now + self.membership.beat_s
        if now >= self._next_poll:
            self.reload()
            self._next_poll = now + 1.0
        for key in set(self._next) - set(self.scrapers):
            del self._next[key]
        started = []
        for key, scraper in self.scrapers.items():
            interval = scraper.interval_s
            due = self._next.setdefault(key, now + _offset(key) * interval)
            if due > now:
                continue
            self._next[key] = due + interval * (1 + (now - due) // interval)
            if key in self._inflight:
                continue  # still running at its next slot: that slot is skipped, not queued
            if self.membership.owns(key):
                task = asyncio.create_task(self._scrape(scraper), name=f"scrape {key}")
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._done, key))
                started.append(task)
        if wait and started:
            await asyncio.gather(*started)
        return min([self._next_beat, self._next_poll, *self._next.values()])

    async def run(self, stopping: asyncio.Event) -> None:
        """Scrape until ``stopping`` is set; then leave the membership, so the others take over at once."""
        try:
            while not stopping.is_set():
                delay = await self.step() - self._clock.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=max(0.001, delay))
        finally:
            for task in list(self._inflight.values()):
                task.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            await self.membership.leave()
