"""Who acts for a deployment: exactly one decision replica holds each deployment's lease.

``Lease.sync(wanted)`` is called once per loop tick with the deployments that exist. It keeps the ones
this replica holds, tries to take the others, lets go of those no longer wanted, and returns what it
holds now. A replica acts (decides, records, hands to placement) only for deployments in that set; all
replicas serve reads.

- ``PostgresAdvisoryLease``: one session-level ``pg_try_advisory_lock`` per deployment, all on one
  dedicated connection. Postgres releases a session's advisory locks when its connection ends, so a
  leader that dies (process killed, host gone, network cut) loses every lease as soon as the server
  notices the connection is gone; another replica's next ``sync`` — one loop tick later — takes over.
  Each ``sync`` runs a statement on that connection, so a leader whose connection died notices before
  it acts again and drops everything it thought it held. (For the moment between its connection dying
  and that ``sync``, the ledger's unique ``(deployment, tick_at)`` index stops a double decision.)
- ``InProcessLease``: for SQLite. An SQLite file is owned by one process (the embedded default runs
  every service in one), so the "lock manager" is a table in that process, keyed by database URL so
  that two decision services over one file in one process (tests) still exclude each other. A holder
  that stops releases; a process that dies takes the whole table with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Collection
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opscale.errors import Unavailable

log = logging.getLogger(__name__)

# What a dead lease connection raises: the driver's errors, or ``Unavailable`` where opscale's engine
# has already translated them (opscale.db.engine).
_CONNECTION_ERRORS = (DBAPIError, SQLAlchemyError, OSError, Unavailable)

_KEY_NAMESPACE = b"opscale.decision.lease\x00"


def lock_key(deployment: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``deployment`` (the namespace keeps other users of
    advisory locks in the same database from colliding with ours)."""
    digest = hashlib.blake2b(_KEY_NAMESPACE + deployment.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Lease(Protocol):
    @property
    def holder_id(self) -> str: ...

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        """Hold as many of ``wanted`` as possible, release the rest; return what is held now."""
        ...

    async def release_all(self) -> None: ...


class PostgresAdvisoryLease:
    def __init__(self, engine: AsyncEngine, holder_id: str) -> None:
        self._engine = engine
        self._holder_id = holder_id
        self._conn: AsyncConnection | None = None
        self._held: dict[str, int] = {}
        self.connects = 0  # lease connections opened so far (1 + reconnections after losing one)

    @property
    def holder_id(self) -> str:
        return self._holder_id

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def backend_pid(self) -> int | None:
        """The server process id of the lease connection (tests kill it to simulate a dead leader)."""
        if self._conn is None:
            return None
        pid = (await self._conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        await self._conn.commit()
        return int(pid)

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        want = set(wanted)
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
                self._held = {}
                self.connects += 1
            conn = self._conn
            gone = [self._held[name] for name in self._held if name not in want]
            if gone:
                await conn.execute(
                    sa.text("SELECT pg_advisory_unlock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                    {"keys": gone},
                )
                self._held = {n: k for n, k in self._held.items() if n in want}
            todo = {lock_key(name): name for name in want if name not in self._held}
            if todo:
                rows = await conn.execute(
                    sa.text("SELECT k, pg_try_advisory_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                    {"keys": list(todo)},
                )
                for key, got in rows:
                    if got:
                        self._held[todo[int(key)]] = int(key)
            else:
                await conn.execute(sa.text("SELECT 1"))  # liveness: a dead connection means no leases
            await conn.commit()  # session-level locks outlive the transaction; do not idle in one
        except _CONNECTION_ERRORS as exc:
            lost = sorted(self._held)
            log.warning(
                "decision lease connection failed; dropping %d leases",
                len(lost),
                extra={"replica": self._holder_id, "error": str(exc)},
            )
            await self._discard()
            return frozenset()
        return frozenset(self._held)

    async def _discard(self) -> None:
        conn, self._conn, self._held = self._conn, None, {}
        if conn is not None:
            # Never hand a connection that may still hold locks back to the pool: invalidating closes
            # it for good (and the pool forgets it).
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.invalidate()

    async def release_all(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            await conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
            await conn.commit()
            self._conn, self._held = None, {}
            await conn.close()
        except _CONNECTION_ERRORS:
            await self._discard()


class LockTable:
    """The in-process stand-in for a database's lock manager: deployment -> holder id."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}


# One table per database URL, process-wide: it stands for the database's lock manager, which is one per
# database too (see the module docstring). Nothing else in opscale keeps process-wide state.
_TABLES: dict[str, LockTable] = {}


def lock_table(database_url: str) -> LockTable:
    return _TABLES.setdefault(database_url, LockTable())


class InProcessLease:
    def __init__(self, table: LockTable, holder_id: str) -> None:
        self._table = table
        self._holder_id = holder_id

    @property
    def holder_id(self) -> str:
        return self._holder_id

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        want = set(wanted)
        owners = self._table.owners
        for name in [n for n, h in owners.items() if h == self._holder_id and n not in want]:
            del owners[name]
        for name in want:
            owners.setdefault(name, self._holder_id)
        return frozenset(n for n in want if owners[n] == self._holder_id)

    async def release_all(self) -> None:
        owners = self._table.owners
        for name in [n for n, h in owners.items() if h == self._holder_id]:
            del owners[name]


def make_lease(engine: AsyncEngine, database_url: str, holder_id: str) -> Lease:
    if engine.dialect.name == "postgresql":
        return PostgresAdvisoryLease(engine, holder_id)
    return InProcessLease(lock_table(database_url), holder_id)
