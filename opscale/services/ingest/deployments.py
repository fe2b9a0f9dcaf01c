"""Which deployments exist, cached briefly so a push does not query the database each time.

Freshness contract (what a client can rely on):

- A deployment that exists is remembered for ``ttl_s`` (2 s): a push within 2 s of its deletion may
  still be accepted (its samples expire with the window; nothing reads them).
- A name that does not exist is remembered for ``negative_ttl_s`` (1 s), so a client pushing for an
  unknown name costs one database query per second, not one per push. Consequently a push for a
  deployment created at time t is accepted from t + 1 s at the latest; before that it is accepted,
  or refused cleanly with NOT_FOUND if a push for the same name was refused within the second before
  the creation. Clients retry NOT_FOUND only if they know the deployment was just created.

Concurrent lookups of one name share a single query. Entries are bounded (``max_entries``); the
oldest are dropped first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.repo import DeploymentRepo
from opscale.errors import NotFound


class DeploymentDirectory:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        ttl_s: float = 2.0,
        negative_ttl_s: float = 1.0,
        max_entries: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_entries = max_entries
        self._known: OrderedDict[str, tuple[bool, float]] = OrderedDict()  # name -> (exists, expires)
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self.lookups = 0  # database queries made (tests check that the cache works)

    async def exists(self, name: str) -> bool:
        cached = self._known.get(name)
        if cached is not None and cached[1] > self._clock.monotonic():
            return cached[0]
        pending = self._inflight.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[name] = future
        try:
            found = await self._lookup(name)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited future does not log "never retrieved"
            raise
        finally:
            self._inflight.pop(name, None)
        future.set_result(found)
        self._remember(name, found)
        return found

    async def require(self, name: str, where: str) -> None:
        """Raises ``NotFound`` naming ``where`` (e.g. ``samples[3].deployment``) if ``name`` is unknown."""
        if not await self.exists(name):
            raise NotFound(f"{where}: deployment '{name}' not found", field=where)

    def forget(self, name: str) -> None:
        self._known.pop(name, None)

    async def _lookup(self, name: str) -> bool:
        self.lookups += 1
        async with self._sessions() as session, session.begin():
            try:
                await DeploymentRepo(session, clock=self._clock).get(name)
            except NotFound:
                return False
        return True

    def _remember(self, name: str, found: bool) -> None:
        ttl = self._ttl_s if found else self._negative_ttl_s
        self._known[name] = (found, self._clock.monotonic() + ttl)
        self._known.move_to_end(name)
        while len(self._known) > self._max_entries:
            self._known.popitem(last=False)
