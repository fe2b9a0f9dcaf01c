"""Component fixtures: real services on port 0 over real gRPC, on both backend pairs.

``stack`` runs each test twice: on the embedded pair (SQLite file + in-process counters) and on the
production pair (PostgreSQL + Redis). ``serve("decision")`` starts that service and returns a channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opscale.api.ingest.v1 import ingest_pb2_grpc
from opscale.clock import VirtualClock
from opscale.config import ScrapeTarget, Settings
from opscale.counters import CounterStore, InMemoryCounterStore, RedisCounterStore, make_counter_store
from opscale.db.migrate import upgrade
from opscale.db.repo import DeploymentRepo
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.services.catalog import SERVICES
from opscale.services.ingest.wiring import Ingest, assemble
from opscale.services.runtime import Runtime, open_runtime
from opscale.signals import store_settings
from opscale.telemetry import build_telemetry

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
    counters = make_counter_store(counters_url, prefix=prefix, settings=store_settings()) if prefix else None
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
            await channel.close(grace=None)
            await stop_service(running, 1.0)


ServeAddress = Callable[[str], Awaitable[str]]


@pytest.fixture
async def serve_address(runtime: Runtime) -> AsyncIterator[ServeAddress]:
    """Like ``serve``, but returns the service's ``host:port`` (for clients that open their own
    channels, such as the CLI)."""
    started: list[RunningService] = []

    async def _serve(name: str) -> str:
        running = await start_service(SERVICES[name].build(runtime), "127.0.0.1", 0, runtime.telemetry)
        started.append(running)
        return f"127.0.0.1:{running.port}"

    try:
        yield _serve
    finally:
        for running in reversed(started):
            await stop_service(running, 1.0)


# --- metrics-ingest ------------------------------------------------------------------------------------


@dataclass
class IngestStack:
    """An ingest service on port 0 whose counter store uses opscale.signals' histogram layouts (the
    same Redis prefix as ``runtime``, so its clean-up covers it) and whose scrape loops the test
    drives one scrape at a time (``ingest.loops``)."""

    runtime: Runtime
    clock: VirtualClock
    ingest: Ingest
    stub: ingest_pb2_grpc.IngestServiceStub
    address: str

    async def create_deployment(self, name: str) -> None:
        spec = {"name": name, "model": {"preset": "llama3-8b"}, "slo": {"ttft_ms": 1000, "tbt_ms": 100}}
        async with self.runtime.sessions() as session, session.begin():
            await DeploymentRepo(session, clock=self.clock).create(name, spec, "test")


StartIngest = Callable[..., Awaitable[IngestStack]]


@pytest.fixture
async def start_ingest(runtime: Runtime, request: pytest.FixtureRequest) -> AsyncIterator[StartIngest]:
    opened: list[tuple[RunningService, grpc.aio.Channel, CounterStore]] = []

    async def _start(scrape_targets: Sequence[ScrapeTarget] = (), **settings: object) -> IngestStack:
        if runtime.settings.counters_url.startswith("memory"):
            store: CounterStore = InMemoryCounterStore(store_settings())
        else:
            import redis.asyncio as aioredis

            prefix = str(request.getfixturevalue("key_prefix"))
            client = aioredis.from_url(runtime.settings.counters_url)
            store = RedisCounterStore(client, prefix, store_settings(), owns_client=True)
        update = {"scrape_targets": list(scrape_targets), **settings}
        rt = dataclasses.replace(runtime, counters=store, settings=runtime.settings.model_copy(update=update))
        assert isinstance(rt.clock, VirtualClock)
        ingest = assemble(rt)
        running = await start_service(ingest.service(run_loops=False), "127.0.0.1", 0, rt.telemetry)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        opened.append((running, channel, store))
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        return IngestStack(rt, rt.clock, ingest, stub, f"127.0.0.1:{running.port}")

    try:
        yield _start
    finally:
        for running, channel, store in reversed(opened):
            await channel.close(None)
            await stop_service(running, 1.0)
            await store.close()
