"""Health that tells the truth (issue 14): readiness ("" and each service name) is NOT_SERVING while a
dependency is unreachable or a supervised background task has died; liveness ("liveness") fails only
for the dead task. An outage is logged once (and once more when it ends), never a traceback a tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.config import Settings
from opscale.counters import InMemoryCounterStore
from opscale.db.engine import make_async_engine, read_session_factory, session_factory
from opscale.db.migrate import upgrade
from opscale.errors import Unavailable
from opscale.grpcutil import server as grpc_server
from opscale.grpcutil.server import LIVENESS, RunningService, ServiceDef, start_service, stop_service
from opscale.services.catalog import SERVICES
from opscale.services.runtime import Runtime, open_runtime
from opscale.signals import store_settings
from opscale.telemetry import Telemetry, build_telemetry
from tests.builders import spec_pb, until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


@pytest.fixture(autouse=True)
def fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_server, "HEALTH_INTERVAL_S", 0.05)


@pytest.fixture
async def telemetry() -> AsyncIterator[Telemetry]:
    made = build_telemetry("opscale-test")
    yield made
    made.shutdown()


async def _status(running: RunningService, name: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
        return int(reply.status)


async def _becomes(running: RunningService, name: str, status: int, timeout_s: float = 10.0) -> None:
    async def check() -> bool:
        return await _status(running, name) == status

    await until(check, timeout_s, what=f"health of {name!r} = {status}")


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= level and r.name.startswith("opscale")]


async def test_readiness_follows_a_dependency_and_the_outage_is_logged_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    reachable = True

    async def database() -> None:
        if not reachable:
            raise Unavailable("cannot connect to PostgreSQL at 127.0.0.1:1/x: connection refused")

    definition = ServiceDef("svc", ("x.v1.Svc",), lambda _server: None, checks={"database": database})
    running = await start_service(definition, "127.0.0.1", 0, telemetry)
    try:
        for name in ("", "x.v1.Svc", LIVENESS):
            assert await _status(running, name) == SERVING
        caplog.set_level(logging.INFO)
        reachable = False
        await _becomes(running, "", NOT_SERVING)
        assert await _status(running, "x.v1.Svc") == NOT_SERVING
        assert await _status(running, LIVENESS) == SERVING  # restarting would not bring the database back
        await asyncio.sleep(0.5)  # ~10 more failed probes
        reachable = True
        await _becomes(running, "", SERVING)
        warnings = _records(caplog, logging.WARNING)
        assert len(warnings) == 1 and "svc: database unavailable" in warnings[0].getMessage(), warnings
        back = [
            r for r in _records(caplog, logging.INFO) if "database unavailable: over after" in r.getMessage()
        ]
        assert len(back) == 1
        assert not any(r.exc_info for r in caplog.records)
    finally:
        await stop_service(running, 1.0)


async def test_a_dead_background_task_fails_readiness_and_liveness(telemetry: Telemetry) -> None:
    async def broken(_stopping: asyncio.Event) -> None:
        raise RuntimeError("a bug in a loop")

    definition = ServiceDef("svc", ("x.v1.Svc",), lambda _server: None, background=[broken])
    running = await start_service(definition, "127.0.0.1", 0, telemetry)
    try:
        await _becomes(running, LIVENESS, NOT_SERVING)
        assert await _status(running, "") == NOT_SERVING
    finally:
        await stop_service(running, 1.0)


def _unreachable_pg_runtime(settings: Settings, telemetry: Telemetry) -> Runtime:
    engine = make_async_engine(f"postgresql://opscale@{UNREACHABLE}/opscale")
    return Runtime(
        settings,
        telemetry,
        engine,
        session_factory(engine),
        read_session_factory(engine),
        InMemoryCounterStore(store_settings()),
    )


@pytest.mark.parametrize("away", ["redis", "postgres"])
async def test_decision_is_not_ready_while_a_dependency_is_away_and_says_so_quietly(
    away: str, tmp_path: Path, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    db_url = f"sqlite:///{tmp_path}/opscale.db"
    upgrade(db_url)
    counters_url = f"redis://{UNREACHABLE}/0" if away == "redis" else "memory://"
    settings = Settings(database_url=db_url, counters_url=counters_url, metrics_port=None)
    runtime = (
        await open_runtime(settings, telemetry)
        if away == "redis"
        else _unreachable_pg_runtime(settings, telemetry)
    )
    caplog.set_level(logging.INFO)
    running = await start_service(SERVICES["decision"].build(runtime), "127.0.0.1", 0, telemetry)
    try:
        if away == "redis":  # deployments whose loads the loop then fails to read, every tick
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = decision_pb2_grpc.DecisionServiceStub(channel)
                for name in ("chat", "code"):
                    await stub.CreateDeployment(
                        dpb.CreateDeploymentRequest(spec=spec_pb(name=name)), timeout=10
                    )
        await _becomes(running, "", NOT_SERVING)
        assert await _status(running, LIVENESS) == SERVING
        await asyncio.sleep(2.0)  # ten decision ticks and forty health probes into the outage
        noisy = _records(caplog, logging.WARNING)
        # One line from the health watcher, at most one from each loop that met the outage.
        assert len(noisy) <= 3, [r.getMessage() for r in noisy]
        assert not any(r.exc_info for r in caplog.records), "a traceback for an expected outage"
    finally:
        await stop_service(running, 1.0)
        await runtime.close()
