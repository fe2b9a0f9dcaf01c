"""Which placement replica leads: the one holding the placement lease (issue 14, item 6b).

Several placement replicas may run over one database; exactly one leads. It is the one that holds the
agents' ``Connect`` streams, runs the reconciler and flushes heartbeats, because those are per process
(``sessions.py``). The others serve every other RPC from the database — reads, and writes such as
ApplyDesired or DrainNode, whose commands the leader's reconciler finds and delivers on its next pass —
and turn an agent away with UNAVAILABLE, naming the leader's address when it advertised one (trailing
metadata ``opscale-leader``), so the agent connects there.

The lease is decision's (``opscale.services.decision.lease``, reached through ``Runtime.lease``): a Postgres
advisory lock on a dedicated connection, or the in-process table on SQLite. A leader that dies loses
it when its connection ends; the next ``sync`` of another replica — within ``renew_s`` — takes it.
Who leads, and where, is written to the audit log when leadership changes (an event an SRE wants
anyway), and followers read the address from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.repo import AuditRepo
from opscale.outage import OUTAGE_ERRORS
from opscale.services.runtime import Lease

log = logging.getLogger(__name__)

#: The lease's name: not a valid deployment name (no ':' there), so it never is a deployment's lock.
LEASE_NAME = "placement:leader"
AUDIT_KIND = "placement"
AUDIT_ACTION = "lead"
LEADER_METADATA = "opscale-leader"


class Leadership:
    def __init__(
        self,
        lease: Lease,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        address: str,
        renew_s: float,
    ) -> None:
        self._lease = lease
        self._sessions = sessions
        self._clock = clock
        self.address = address  # where agents reach this replica ("" when not advertised)
        self._renew_s = renew_s
        self.leading = False
        self.leader_address = ""  # as last read from the audit log, while following
        self.settled = asyncio.Event()  # set once the first renewal has said whether this replica leads

    @property
    def holder_id(self) -> str:
        return self._lease.holder_id

    async def step(self, on_gain: Callable[[], None], on_loss: Callable[[], None]) -> bool:
        """One renewal: keep or take the lease, say so on a change; returns whether this replica leads."""
        held = LEASE_NAME in await self._lease.sync([LEASE_NAME])
        if held and not self.leading:
            self.leading = True
            log.info("placement replica %s leads now (address %s)", self.holder_id, self.address or "-")
            on_gain()
            await self._announce()
        elif not held and self.leading:
            self.leading = False
            log.warning("placement replica %s lost the lease; following now", self.holder_id)
            on_loss()
        if not held:
            self.leader_address = await self._leader_address()
        return held

    async def decided(self, timeout_s: float) -> bool:
        """Whether this replica leads, once the first renewal has said (a replica that just started
        answers its first agents after it knows, not before); after ``timeout_s``, what it knows now."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled.wait(), timeout=timeout_s)
        return self.leading

    async def _announce(self) -> None:
        async with self._sessions() as session, session.begin():
            await AuditRepo(session, clock=self._clock).append(
                "placement", AUDIT_ACTION, AUDIT_KIND, self.holder_id[:255], None, {"address": self.address}
            )

    async def _leader_address(self) -> str:
        async with self._sessions() as session:
            latest = await AuditRepo(session, clock=self._clock).list(kind=AUDIT_KIND, limit=20)
        found = next((e for e in latest if e.action == AUDIT_ACTION and e.after), None)
        return str(found.after.get("address", "")) if found is not None and found.after else ""

    async def run(
        self, stopping: asyncio.Event, on_gain: Callable[[], None], on_loss: Callable[[], None]
    ) -> None:
        try:
            while not stopping.is_set():
                try:
                    await self.step(on_gain, on_loss)
                except OUTAGE_ERRORS as exc:  # the database is down: the lease reports it, once
                    log.debug("placement lease renewal failed: %s", exc)
                except Exception:  # a bug: log it whole, keep renewing
                    log.exception("placement lease renewal failed")
                self.settled.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._renew_s)
        finally:
            if self.leading:
                self.leading = False
                on_loss()
            await self._lease.release_all()
