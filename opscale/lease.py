"""Named leases: exactly one holder acts for each name (a deployment for decision, "placement" for the
placement leader), with liveness and fencing.

``Lease.sync(wanted)`` is called once per loop pass with the names the caller wants. It keeps the ones
this holder has, tries to take the others, lets go of those no longer wanted, and returns what it holds
now. ``Lease.epoch(name)`` is the fencing token of a held name: it grows by one every time any holder
takes that name (table ``lease_epochs``). Every write a holder makes on the strength of a lease runs
``fence(session, ...)`` in the same transaction: a holder whose epoch is no longer the current one (it
hung or was cut off, and another took over) has its write refused by the database, not by its own,
possibly stale, belief.

- ``PostgresAdvisoryLease``: one session-level ``pg_try_advisory_lock`` per name, all on one dedicated
  connection. Postgres releases a session's advisory locks when its connection ends. Liveness: that
  connection runs with ``idle_session_timeout`` = ``ttl_s`` (a holder that stops renewing — hung,
  SIGSTOPped, partitioned — has its session ended by the server after ``ttl_s``, and another replica's
  next ``sync`` takes over), server-side TCP keepalives (a vanished host is noticed in seconds, not the
  system default of two hours) and ``statement_timeout``; each ``sync`` is bounded by ``ttl_s`` on the
  client too and drops every lease when it fails.
- A holder whose pass runs longer than the TTL (the cold pass over 1,000 deployments takes 5–8 s on a
  loaded 2-vCPU machine: BENCHMARKS.md, "Decision loop") keeps its leases with ``renewing``: a task
  beside the pass renews every third of the TTL while the pass reports progress. It runs on the pass's
  event loop, so a process that hangs or is stopped renews nothing and loses its leases after ``ttl_s``;
  a pass stuck awaiting something that never comes reports nothing and loses them within 4/3 ``ttl_s``.
- ``InProcessLease``: for SQLite. An SQLite file is owned by one process (the embedded default runs
  every service in one), so the "lock manager" is a table in that process, keyed by database URL so
  that two decision services over one file in one process (tests) still exclude each other. A holder
  that stops releases; a process that dies takes the whole table with it. Epochs live in the database
  as on PostgreSQL, so fencing is the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from opscale.db.models import Decision, LeaseEpoch
from opscale.errors import Unavailable
from opscale.outage import Outage

log = logging.getLogger(__name__)

# What a dead lease connection raises: the driver's errors, ``Unavailable`` where opscale's engine has
# already translated them (opscale.db.engine), or the client-side bound on a ``sync`` running out.
_CONNECTION_ERRORS = (DBAPIError, SQLAlchemyError, OSError, Unavailable, TimeoutError)

# A holder that stops renewing loses its leases after this long (the bound is 5 s; a standby's
# next pass, one loop wake later, takes over). A healthy holder renews every loop pass (0.2 s by default),
# and within a pass slower than this, every third of it (``renewing``).
DEFAULT_TTL_S = 3.0

DECISION = "decision"
IDLE_SESSION_TIMEOUT_SINCE = 140000  # server_version_num of PostgreSQL 14


def lock_key(name: str, namespace: str = DECISION) -> int:
    """A stable signed 64-bit advisory-lock key for ``name`` in ``namespace`` (the prefix keeps other
    users of advisory locks in the same database from colliding with ours)."""
    prefix = f"opscale.{namespace}.lease\x00".encode()
    digest = hashlib.blake2b(prefix + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def row_name(namespace: str, name: str) -> str:
    """The ``lease_epochs`` key of ``name`` in ``namespace``."""
    return f"{namespace}/{name}"


class Lease(Protocol):
    @property
    def holder_id(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def ttl_s(self) -> float:
        """How long held names outlive the holder's last renewal (``inf``: until released)."""
        ...

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        """Hold as many of ``wanted`` as possible, release the rest; return what is held now."""
        ...

    def epoch(self, name: str) -> int | None:
        """The fencing token this holder took ``name`` with (None: not held, or no database epochs)."""
        ...

    async def renew(self) -> None:
        """Keep what is held alive without changing it (between two ``sync`` calls far apart)."""
        ...

    async def release_all(self) -> None: ...


class Progress:
    """What ``renewing`` hands its pass: the pass calls ``made()`` as it gets work done."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def made(self) -> None:
        self.last = asyncio.get_running_loop().time()


@contextlib.asynccontextmanager
async def renewing(lease: Lease) -> AsyncIterator[Progress]:
    """Renew ``lease`` every third of its TTL while the body runs and makes progress (module docstring).

    Renewals get in at the body's awaits, so a body that holds the event loop (a hung process) renews
    nothing; and a renewal is made only if the body reported progress within the last third of the TTL,
    so a body stuck awaiting something that never comes loses its leases within 4/3 of the TTL too."""
    progress = Progress()
    every_s = lease.ttl_s / 3.0
    if not math.isfinite(every_s):
        yield progress
        return
    stop = asyncio.Event()

    async def beat() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
                return
            if loop.time() - progress.last <= every_s:
                await lease.renew()

    task = asyncio.create_task(beat())
    try:
        yield progress
    finally:
        stop.set()
        await task  # never cancelled: a renewal cut mid-query would leave the connection unusable


def _insert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(LeaseEpoch)


async def take_epochs(
    conn: AsyncConnection | AsyncSession, namespace: str, names: Collection[str], holder: str
) -> dict[str, int]:
    """Bump and return the epoch of each of ``names`` (just taken by ``holder``), in the caller's
    transaction."""
    if not names:
        return {}
    dialect = conn.get_bind().dialect if isinstance(conn, AsyncSession) else conn.dialect
    insert = _insert(dialect.name)
    statement = (
        insert.values([{"name": row_name(namespace, n), "epoch": 1, "holder": holder} for n in names])
        .on_conflict_do_update(
            index_elements=[LeaseEpoch.name],
            set_={"epoch": LeaseEpoch.epoch + 1, "holder": insert.excluded.holder},
        )
        .returning(LeaseEpoch.name, LeaseEpoch.epoch)
    )
    prefix = len(namespace) + 1
    return {str(key)[prefix:]: int(epoch) for key, epoch in await conn.execute(statement)}


async def fence(
    session: AsyncSession, namespace: str, epochs: Mapping[str, int], *, hold_s: float = DEFAULT_TTL_S
) -> frozenset[str]:
    """Of ``epochs`` (name -> the epoch the caller holds it with), the names whose epoch is still the
    current one. Call it inside the transaction that writes on the strength of those leases and write
    only for the names returned: the rows are share-locked until that transaction ends, so a new holder
    cannot take the name (and bump its epoch) between this check and the commit.

    On PostgreSQL the transaction is also told to end itself if it sits idle for ``hold_s`` (a writer
    that hangs half-way must not keep a new holder from taking over)."""
    if not epochs:
        return frozenset()
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            sa.text(f"SET LOCAL idle_in_transaction_session_timeout = {max(1, round(hold_s * 1000))}")
        )
    keys = {row_name(namespace, n): n for n in epochs}
    rows = await session.execute(
        sa.select(LeaseEpoch.name, LeaseEpoch.epoch)
        .where(LeaseEpoch.name.in_(list(keys)))
        .with_for_update(read=True)
    )
    current = {keys[str(key)]: int(epoch) for key, epoch in rows}
    return frozenset(n for n, e in epochs.items() if current.get(n) == e)


async def decision_is_current(session: AsyncSession, deployment: str, decision_id: str) -> bool:
    """Whether the decision ``decision_id`` of ``deployment`` was made under the lease epoch that is
    still current, checked (and share-locked) in ``session``'s transaction. Placement asks before acting
    on a hand-off: a leader deposed after recording a decision must not have it applied late. A decision
    id this ledger does not know, or one recorded without an epoch, is not fenced (True)."""
    try:
        key = int(decision_id)
    except ValueError:
        return True
    if not 0 < key < 2**63:
        return True
    epoch = (
        await session.execute(
            sa.select(Decision.lease_epoch).where(Decision.id == key, Decision.deployment == deployment)
        )
    ).scalar_one_or_none()
    return epoch is None or bool(await fence(session, DECISION, {deployment: epoch}))


class PostgresAdvisoryLease:
    def __init__(
        self, engine: AsyncEngine, holder_id: str, *, namespace: str = DECISION, ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        self._engine = engine
        self._holder_id = holder_id
        self._namespace = namespace
        self._ttl_s = ttl_s
        self._conn: AsyncConnection | None = None
        self._held: dict[str, int] = {}  # name -> lock key
        self._epochs: dict[str, int] = {}
        self.connects = 0  # lease connections opened so far (1 + reconnections after losing one)
        self._outage = Outage(f"{namespace} lease: the database is unavailable", log)
        self._busy = asyncio.Lock()  # one statement at a time on the lease connection (``renewing``)

    @property
    def holder_id(self) -> str:
        return self._holder_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def epoch(self, name: str) -> int | None:
        return self._epochs.get(name) if name in self._held else None

    async def backend_pid(self) -> int | None:
        """The server process id of the lease connection (tests kill it to simulate a dead leader)."""
        if self._conn is None:
            return None
        pid = (await self._conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        await self._conn.commit()
        return int(pid)

    async def _connect(self) -> AsyncConnection:
        conn = await self._engine.connect()
        ttl_ms = max(1000, round(self._ttl_s * 1000))
        # Liveness on the server's side: a session that stops renewing (its holder hung or cut off) is
        # ended after ttl_s and its advisory locks go with it; keepalives notice a vanished peer within
        # ~3 s whatever the system default (two hours on Linux). Applies to this session only.
        settings = [
            f"statement_timeout = {ttl_ms}",
            "tcp_keepalives_idle = 1",
            "tcp_keepalives_interval = 1",
            "tcp_keepalives_count = 3",
        ]
        version = int((await conn.execute(sa.text("SHOW server_version_num"))).scalar_one())
        if version >= IDLE_SESSION_TIMEOUT_SINCE:
            settings.append(f"idle_session_timeout = {ttl_ms}")
        elif self.connects == 0:
            log.warning(
                "PostgreSQL %s has no idle_session_timeout (14+): a hung %s leader keeps its leases "
                "until its connection dies",
                version,
                self._namespace,
            )
        await conn.execute(sa.text("; ".join(f"SET {s}" for s in settings)))
        await conn.commit()
        self.connects += 1
        return conn

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        async with self._busy:
            if await self._bounded(self._sync(set(wanted))):
                self._outage.ok()
            return frozenset(self._held)

    async def renew(self) -> None:
        async with self._busy:
            if self._conn is not None and self._held:
                await self._bounded(self._renewal(self._conn))

    async def _bounded(self, work: Awaitable[None]) -> bool:
        """Run ``work`` on the lease connection within the TTL; on failure drop every lease (False)."""
        try:
            async with asyncio.timeout(self._ttl_s):  # a renewal that hangs is no renewal
                await work
        except _CONNECTION_ERRORS as exc:
            error = str(exc) or type(exc).__name__
            if self._held:  # a change of leadership: always said
                log.warning(
                    "%s lease connection failed; dropping %d leases: %s",
                    self._namespace,
                    len(self._held),
                    error,
                    extra={"replica": self._holder_id},
                )
            else:  # holding nothing and still failing: an outage, said once
                self._outage.failed(error)
            await self._discard()
            return False
        return True

    @staticmethod
    async def _renewal(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT 1"))  # resets the server's idle timer
        await conn.commit()  # session-level locks outlive the transaction; do not idle in one

    async def _sync(self, want: set[str]) -> None:
        if self._conn is None:
            self._held, self._epochs = {}, {}
            self._conn = await self._connect()
        conn = self._conn
        gone = [self._held[name] for name in self._held if name not in want]
        if gone:
            await conn.execute(
                sa.text("SELECT pg_advisory_unlock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                {"keys": gone},
            )
            self._held = {n: k for n, k in self._held.items() if n in want}
            self._epochs = {n: e for n, e in self._epochs.items() if n in self._held}
        todo = {lock_key(name, self._namespace): name for name in want if name not in self._held}
        if not todo:
            await self._renewal(conn)
            return
        rows = await conn.execute(
            sa.text("SELECT k, pg_try_advisory_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": list(todo)},
        )
        taken = {todo[int(key)]: int(key) for key, got in rows if got}
        # Committed just below; until then nobody can fence on the new epoch anyway.
        self._epochs.update(await take_epochs(conn, self._namespace, taken, self._holder_id))
        await conn.commit()  # session-level locks outlive the transaction; do not idle in one
        self._held.update(taken)
        self._epochs = {n: e for n, e in self._epochs.items() if n in self._held}

    async def _discard(self) -> None:
        conn, self._conn, self._held, self._epochs = self._conn, None, {}, {}
        if conn is not None:
            # Never hand a connection that may still hold locks back to the pool: invalidating closes
            # it for good (and the pool forgets it).
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.invalidate()

    async def release_all(self) -> None:
        async with self._busy:
            conn = self._conn
            if conn is None:
                return
            try:
                await conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
                await conn.commit()
                self._conn, self._held, self._epochs = None, {}, {}
                await conn.close()
            except _CONNECTION_ERRORS:
                await self._discard()


class LockTable:
    """The in-process stand-in for a database's lock manager: name -> holder id."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}


# One table per database URL (and namespace), process-wide: it stands for the database's lock manager,
# which is one per database too (see the module docstring). Nothing else in opscale keeps process-wide
# state.
_TABLES: dict[str, LockTable] = {}


def lock_table(database_url: str, namespace: str = DECISION) -> LockTable:
    key = database_url if namespace == DECISION else f"{namespace}\x00{database_url}"
    return _TABLES.setdefault(key, LockTable())


class InProcessLease:
    """``engine``: where epochs are kept (None: no epochs, for tests of the exclusion alone)."""

    def __init__(
        self,
        table: LockTable,
        holder_id: str,
        *,
        engine: AsyncEngine | None = None,
        namespace: str = DECISION,
    ) -> None:
        self._table = table
        self._holder_id = holder_id
        self._engine = engine
        self._namespace = namespace
        self._epochs: dict[str, int] = {}

    @property
    def holder_id(self) -> str:
        return self._holder_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def ttl_s(self) -> float:
        return math.inf  # the table's entries do not lapse: a holder gives them up or its process dies

    def epoch(self, name: str) -> int | None:
        return self._epochs.get(name) if self._table.owners.get(name) == self._holder_id else None

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        want = set(wanted)
        owners = self._table.owners
        for name in [n for n, h in owners.items() if h == self._holder_id and n not in want]:
            del owners[name]
        new = [n for n in want if n not in owners]
        for name in new:
            owners[name] = self._holder_id
        if new and self._engine is not None:
            try:
                async with self._engine.begin() as conn:
                    self._epochs.update(await take_epochs(conn, self._namespace, new, self._holder_id))
            except _CONNECTION_ERRORS as exc:  # no epoch, no lease: try again next pass
                log.warning(
                    "%s lease: could not record epochs: %s",
                    self._namespace,
                    exc,
                    extra={"replica": self._holder_id},
                )
                for name in new:
                    del owners[name]
        held = frozenset(n for n in want if owners.get(n) == self._holder_id)
        self._epochs = {n: e for n, e in self._epochs.items() if n in held}
        return held

    async def renew(self) -> None:
        return None

    async def release_all(self) -> None:
        owners = self._table.owners
        for name in [n for n, h in owners.items() if h == self._holder_id]:
            del owners[name]
        self._epochs = {}


def make_lease(
    engine: AsyncEngine,
    database_url: str,
    holder_id: str,
    *,
    namespace: str = DECISION,
    ttl_s: float = DEFAULT_TTL_S,
) -> Lease:
    """The lease for this database: advisory locks on PostgreSQL, the in-process table on SQLite."""
    if engine.dialect.name == "postgresql":
        return PostgresAdvisoryLease(engine, holder_id, namespace=namespace, ttl_s=ttl_s)
    return InProcessLease(lock_table(database_url, namespace), holder_id, engine=engine, namespace=namespace)
