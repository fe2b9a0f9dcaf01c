"""Running opscale's gRPC services: one grpc.aio server per service, each with health checks,
reflection and the error/telemetry interceptor; graceful shutdown on SIGTERM or Ctrl-C.

A service is described by a ``ServiceDef`` (what to register, which background tasks to run); the same
definitions run one per process in production (``opscale serve decision``) or all together in one
process for the embedded default (``opscale up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from opscale.errors import ConfigError
from opscale.grpcutil.auth import Authenticator
from opscale.grpcutil.interceptor import ServerInterceptor
from opscale.grpcutil.reflection import enable_reflection
from opscale.grpcutil.tls import TlsFiles, is_loopback, server_credentials
from opscale.outage import Outage
from opscale.telemetry import Telemetry

log = logging.getLogger(__name__)

# A background task gets an Event that is set when the service is stopping; it should return soon after.
BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
# A dependency probe (database, counter store): returns if the dependency answers, raises if not.
Check = Callable[[], Awaitable[None]]

# grpc.health.v1 names: "" and each proto service name answer *readiness* (SERVING only while every
# dependency answers and every background task runs: send me traffic); LIVENESS answers whether the
# process itself works (NOT_SERVING only when a background task died, which a restart fixes; a
# dependency outage is not the process's fault and restarting would not help).
LIVENESS = "liveness"
HEALTH_INTERVAL_S = 2.0  # how often dependencies are probed
CHECK_TIMEOUT_S = 2.0  # a probe that takes longer counts as failed (a hung database is a down one)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class ServiceDef:
    name: str
    # Full proto service names (for health and reflection), e.g. "opscale.api.decision.v1.DecisionService".
    service_names: tuple[str, ...]
    register: Callable[[grpc.aio.Server], None]
    background: list[BackgroundTask] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called as the service starts stopping, before in-flight RPCs get their grace: end long-lived
    # streams (watches, agent connections) so that shutdown takes milliseconds, not the whole grace.
    on_stopping: list[Callable[[], None]] = field(default_factory=list)
    # Methods whose converter checks the edge rules itself (``opscale.wire.validate``), for speed.
    fast_paths: frozenset[str] = frozenset()
    # Dependencies readiness depends on, by name ("database", "counters").
    checks: dict[str, Check] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """How a server listens: TLS files, whether plaintext beyond loopback is allowed, who may call."""

    tls: TlsFiles = field(default_factory=TlsFiles)
    allow_insecure: bool = False
    auth: Authenticator | None = None

    @classmethod
    def of(cls, settings: Any) -> ServerSecurity:
        """From a ``Settings``; reads the tokens file (``ConfigError`` if it is bad)."""
        return cls(TlsFiles.of(settings), settings.allow_insecure, Authenticator.of(settings))


PLAINTEXT = ServerSecurity()


@dataclass
class Health:
    """What readiness and liveness are made of; ``publish`` pushes it to the health servicer."""

    servicer: HealthServicer
    names: tuple[str, ...]  # the readiness names: "" and the proto services
    down: set[str] = field(default_factory=set)  # dependencies that failed their last probe
    dead: set[str] = field(default_factory=set)  # background tasks that stopped with an error
    stopping: bool = False

    @property
    def ready(self) -> bool:
        return not (self.down or self.dead or self.stopping)

    async def publish(self) -> None:
        if self.stopping:
            return  # enter_graceful_shutdown set everything NOT_SERVING for good
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        for name in self.names:
            await self.servicer.set(name, serving if self.ready else not_serving)
        await self.servicer.set(LIVENESS, not_serving if self.dead else serving)


@dataclass
class RunningService:
    definition: ServiceDef
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    stopping: asyncio.Event
    tasks: list[asyncio.Task[None]]
    state: Health | None = None

    @property
    def name(self) -> str:
        return self.definition.name


def _bind(server: grpc.aio.Server, address: str, security: ServerSecurity, who: str) -> int:
    """Listen on ``address``: TLS when a certificate is configured; plaintext only on loopback, or
    anywhere with ``allow_insecure`` (warned)."""
    if security.tls.serves_tls:
        return server.add_secure_port(address, server_credentials(security.tls))
    host = address.rsplit(":", 1)[0]
    if not is_loopback(host):
        if not security.allow_insecure:
            raise ConfigError(
                f"{who} will not listen on {address} without TLS: beyond loopback set tls_cert_file and "
                "tls_key_file (and tls_ca_file for client certificates; `opscale certs init` makes them), "
                "or set allow_insecure: true to accept plaintext"
            )
        log.warning(
            "%s listens on %s WITHOUT TLS (allow_insecure is set): anyone on the network can call it "
            "and read its traffic",
            who,
            address,
            extra={"service": who},
        )
    return server.add_insecure_port(address)


async def start_service(
    definition: ServiceDef,
    host: str,
    port: int,
    telemetry: Telemetry,
    *,
    port_setting: str = "port",
    security: ServerSecurity = PLAINTEXT,
) -> RunningService:
    interceptor = ServerInterceptor(
        definition.name, telemetry, auth=security.auth, fast_paths=definition.fast_paths
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    definition.register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*definition.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    enable_reflection(names, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _check_free(host, port, definition.name, port_setting)
    try:
        bound = _bind(server, address, security, definition.name)
    except RuntimeError as exc:
        # gRPC's own text ends "set GRPC_VERBOSITY=debug ..."; the one line says what to do instead.
        why = str(exc).split(";", 1)[0]
        raise ConfigError(
            f"{definition.name} cannot listen on {host}:{port} ({port_setting}): {why} (in use, or not an "
            f"address of this host); port 0 picks a free one"
        ) from None
    if bound == 0:
        raise ConfigError(
            f"{definition.name} cannot listen on {host}:{port} ({port_setting}): the address is in use or "
            "not an address of this host; port 0 picks a free one"
        )
    await server.start()
    state = Health(health_servicer, ("", *definition.service_names))
    await state.publish()
    stopping = asyncio.Event()
    tasks = [
        asyncio.create_task(
            _guarded(task(stopping), definition.name, f"{definition.name}-bg-{i}", state),
            name=f"{definition.name}-bg-{i}",
        )
        for i, task in enumerate(definition.background)
    ]
    if definition.checks:
        tasks.append(
            asyncio.create_task(_watch(definition, state, stopping), name=f"{definition.name}-health")
        )
    log.info("%s serving on %s:%d", definition.name, host, bound, extra={"service": definition.name})
    return RunningService(definition, server, bound, health_servicer, stopping, tasks, state)


async def _guarded(coro: Awaitable[None], service: str, task: str, state: Health) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        # A background loop dying silently would leave a service that answers health checks but does
        # nothing: log loudly (a bug: loops handle their own transient errors) and stop being ready.
        log.exception("background task of %s stopped with an error", service, extra={"service": service})
        state.dead.add(task)
        await state.publish()


async def probe(checks: dict[str, Check], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, BaseException]:
    """Run every check concurrently; return the failed ones with their errors."""

    async def one(check: Check) -> BaseException | None:
        try:
            async with asyncio.timeout(timeout_s):
                await check()
        except TimeoutError:
            return TimeoutError(f"no answer within {timeout_s:g} s")
        except Exception as exc:  # any failure of a probe is "not available", never a crash
            return exc
        return None

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return {name: err for name, err in zip(checks, results, strict=True) if err is not None}


async def _watch(definition: ServiceDef, state: Health, stopping: asyncio.Event) -> None:
    """Probe the dependencies every ``HEALTH_INTERVAL_S`` and publish readiness when it changes; the
    one place that reports a dependency outage (one WARNING, reminders, one INFO: ``Outage``)."""
    outages = {
        name: Outage(f"{definition.name}: {name} unavailable", log, extra={"service": definition.name})
        for name in definition.checks
    }
    while not stopping.is_set():
        failed = await probe(definition.checks)
        for name, outage in outages.items():
            if name in failed:
                outage.failed(failed[name])
            else:
                outage.ok()
        if set(failed) != state.down:
            state.down = set(failed)
            await state.publish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), HEALTH_INTERVAL_S)


async def stop_service(running: RunningService, grace_s: float) -> None:
    """Health goes NOT_SERVING first (load balancers stop sending), then in-flight RPCs get ``grace_s``."""
    if running.state is not None:
        running.state.stopping = True
    await running.health.enter_graceful_shutdown()
    running.stopping.set()
    for end_streams in running.definition.on_stopping:
        end_streams()
    if running.tasks:
        _done, pending = await asyncio.wait(running.tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await running.server.stop(grace_s)
    for hook in running.definition.on_stop:
        await hook()
    log.info("%s stopped", running.name, extra={"service": running.name})


@contextlib.contextmanager
def signals_set(
    event: asyncio.Event, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[None]:
    """While inside, each of ``signals`` sets ``event`` instead of killing the process."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / platform
            loop.add_signal_handler(sig, event.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def wait_for_signal(stop: asyncio.Event | None = None) -> None:
    """Block until SIGTERM/SIGINT (or ``stop`` is set)."""
    event = stop or asyncio.Event()
    with signals_set(event):
        await event.wait()


def tune_gc(thresholds: tuple[int, int, int] | None) -> None:
    """Once the services are up: freeze the start-up heap and make young collections rarer.

    A service handling ~100,000 samples/s allocates fast; with CPython's default gen-0 threshold (700)
    collections run thousands of times a second, and every full collection walks the whole import-time
    heap (grpc, protobuf, SQLAlchemy, …). ``gc.freeze()`` moves that heap out of the collector's sight
    and a larger gen-0 threshold batches the rest; reference counting still frees almost everything at
    once, so memory stays flat. Measured in BENCHMARKS.md ("Ingest", garbage-collector settings).
    """
    if thresholds is None:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


async def run_until_signal(
    services: Sequence[tuple[Callable[[], ServiceDef], int, str]],
    host: str,
    telemetry: Telemetry,
    grace_s: float,
    *,
    security: ServerSecurity = PLAINTEXT,
    on_ready: Callable[[list[RunningService]], None] | None = None,
    on_started: Callable[[int, RunningService], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Build and start every (definition builder, port, port setting name) in order, wait for a signal,
    stop them in reverse order. Each is built only once those before it listen, so a builder can be
    told where they are (a port of 0 is only known then)."""
    running: list[RunningService] = []
    try:
        for build, port, setting in services:
            running.append(
                await start_service(build(), host, port, telemetry, port_setting=setting, security=security)
            )
            if on_started is not None:
                on_started(len(running) - 1, running[-1])
        if on_ready is not None:
            on_ready(running)
        await wait_for_signal(stop)
    finally:
        for service in reversed(running):
            await stop_service(service, grace_s)


def _check_free(host: str, port: int, name: str, port_setting: str) -> None:
    """Refuse a port in use with one line before gRPC tries it (its C core would log a line of its own
    first). gRPC's bind stays the authority; this only makes the common case read well."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT port is free to gRPC too
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"{name} cannot listen on {host}:{port} ({port_setting}): {exc.strerror or exc}; port 0 "
                "picks a free one"
            ) from None
