"""Component fixtures: real services on port 0 over real gRPC, on both backend pairs.

``stack`` runs each test twice: on the embedded pair (SQLite file + in-process counters) and on the
production pair (PostgreSQL + Redis). ``serve("decision")`` starts that service and returns a channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opscale.clock import VirtualClock
from opscale.config import Settings
from opscale.counters import make_counter_store
from opscale.db.migrate import upgrade
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.telemetry import build_telemetry
from services.catalog import SERVICES
from services.runtime import Runtime, open_runtime

Serve = Callable[[str], Awaitable[grpc.aio.Channel]]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(params=["embedded", "postgres-redis"])
async def runtime(
    request: pytest.FixtureRequest, tmp_path: object, spans: InMemorySpanExporter
) -> AsyncIterator[Runtime]:
    if request.param == "embedded":
        db_url, counters_url, prefix = f"sqlite:///{tmp_path}/opscale.db", "memory://", ""
    else:
        db_url = str(request.getfixturevalue("pg_url"))
        counters_url = str(request.getfixturevalue("redis_url"))
        prefix = str(request.getfixturevalue("key_prefix"))
    upgrade(db_url)
    settings = Settings(database_url=db_url, counters_url=counters_url, metrics_port=None)
    telemetry = build_telemetry("opscale-test", span_exporter=spans)
    counters = make_counter_store(counters_url, prefix=prefix) if prefix else None
    rt = await open_runtime(settings, telemetry, clock=VirtualClock(), counters=counters)
    try:
        yield rt
    finally:
        await rt.close()
        telemetry.shutdown()
        if prefix:
            await _delete_keys(counters_url, prefix)


async def _delete_keys(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def serve(runtime: Runtime) -> AsyncIterator[Serve]:
    started: list[tuple[RunningService, grpc.aio.Channel]] = []

    async def _serve(name: str) -> grpc.aio.Channel:
        running = await start_service(SERVICES[name].build(runtime), "127.0.0.1", 0, runtime.telemetry)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        started.append((running, channel))
        return channel

    try:
        yield _serve
    finally:
        for running, channel in reversed(started):
            await channel.close()
            await stop_service(running, 1.0)
