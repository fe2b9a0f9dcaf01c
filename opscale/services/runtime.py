"""What every service process shares: settings, telemetry, clock, database sessions, the counter store.

Built once in ``main`` (``opscale serve X`` or ``opscale up``) and passed to each service's ``build``; no
module-level engines or clients anywhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opscale.clock import Clock, SystemClock
from opscale.config import Settings
from opscale.counters import CounterStore, make_counter_store
from opscale.db.engine import make_async_engine, read_session_factory, session_factory
from opscale.db.migrate import ensure_at_head, upgrade
from opscale.grpcutil.server import Check
from opscale.services.decision.lease import Lease as Lease
from opscale.services.decision.lease import make_lease
from opscale.signals import store_settings
from opscale.telemetry import Telemetry


@dataclass
class Runtime:
    settings: Settings
    telemetry: Telemetry
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]  # for code that never writes (db.engine)
    counters: CounterStore
    clock: Clock = field(default_factory=SystemClock)

    def lease(self, holder_id: str, namespace: str) -> Lease:
        """A lease on this runtime's database lock manager in ``namespace`` (its own lock keys and
        epochs: placement's leadership never contends with a deployment that happens to share its name)."""
        return make_lease(
            self.engine,
            self.settings.database_url,
            holder_id,
            namespace=namespace,
            ttl_s=self.settings.lease_ttl_s,
        )

    async def close(self) -> None:
        await self.counters.close()
        await self.engine.dispose()

    def checks(self, *, counters: bool = True) -> dict[str, Check]:
        """Readiness probes of what a service needs: the database, and the counter store if
        ``counters`` (``opscale.grpcutil.server``: NOT_SERVING while one fails)."""

        async def database() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        found: dict[str, Check] = {"database": database}
        if counters:
            found["counters"] = self.counters.ping
        return found


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a sqlite URL (None for other databases or in-memory SQLite)."""
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split(":///", 1)[1] if ":///" in database_url else ""
    return Path(path) if path and path != ":memory:" else None


def prepare_embedded_database(database_url: str) -> bool:
    """For the embedded default only: create the SQLite file's directory and schema if the file is new.

    Returns True if it created the schema. Any other database is never migrated implicitly.
    """
    path = sqlite_path(database_url)
    if path is None or path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(database_url)
    return True


async def open_runtime(
    settings: Settings,
    telemetry: Telemetry,
    *,
    clock: Clock | None = None,
    counters: CounterStore | None = None,
) -> Runtime:
    """Refuses (FailedPrecondition) unless the database schema is at the head revision.

    ``counters`` overrides the store built from ``settings.counters_url`` (tests isolate Redis keys so).
    """
    await asyncio.to_thread(ensure_at_head, settings.database_url)
    engine = make_async_engine(settings.database_url)
    counters = counters or make_counter_store(settings.counters_url, settings=store_settings())
    return Runtime(
        settings=settings,
        telemetry=telemetry,
        engine=engine,
        sessions=session_factory(engine),
        read_sessions=read_session_factory(engine),
        counters=counters,
        clock=clock or SystemClock(),
    )
