"""Telemetry built once per process and injected: OpenTelemetry tracing, Prometheus metrics, logging.

Every service gets a ``Telemetry``; nothing reaches for a global provider or the prometheus_client
default registry, so several services (``opscale up``) and many tests can live in one process without
colliding. Under ``opscale up`` each service still traces as itself: ``Telemetry.service(name)`` gives it
a tracer provider of its own (its own ``service.name``) over the shared export pipeline and registry.

Standard OpenTelemetry environment variables are honoured: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) alone turns on
OTLP/gRPC export, with the exporter's own ``OTEL_EXPORTER_OTLP_*`` settings (headers, certificate,
timeout, compression); ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` turn it off;
``OTEL_TRACES_SAMPLER`` picks the sampler (parent-based always-on by default).

Periodic passes (the decision tick, placement's reconcile) start root spans marked ``PERIODIC``; one
that did nothing — no span under it, no context handed on — is not exported (``_DropIdleRoots``): an
idle control plane runs five ticks a second, and empty roots would bury the traces that matter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from opscale.config import LogFormat, LogLevel
from opscale.errors import ConfigError

#: Attribute on the root span of a periodic pass; such a root is exported only if the pass did work.
PERIODIC = "opscale.periodic"
#: Set on a span whose context was handed on (a queued command): its trace continues elsewhere.
HANDED_ON = "opscale.context_handed_on"

#: Server-side gRPC codes that are the server's fault: the only ones that make a SERVER span an error
#: (OpenTelemetry semantic conventions for gRPC). NOT_FOUND, INVALID_ARGUMENT and the like are the
#: caller's outcome, recorded in ``rpc.grpc.status_code`` but not as span errors. Client spans mark
#: every non-OK code as an error.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

# rpc.server.duration is in milliseconds (semantic conventions); most of ours take well under one.
_RPC_BUCKETS_MS = (0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


class RpcMetrics:
    """RPCs handled, the OpenTelemetry ``rpc.server.duration`` histogram as Prometheus exposes it
    (``rpc_server_duration_milliseconds``, attributes as labels with dots made underscores): its
    ``_count`` by ``rpc_grpc_status_code`` is the request rate by outcome."""

    LABELS = ("rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "rpc_server_duration_milliseconds",
            "Duration of inbound RPCs (streams: until the stream ends), by gRPC service, method and status",
            self.LABELS,
            registry=registry,
            buckets=_RPC_BUCKETS_MS,
        )
        self.in_flight = Gauge("opscale_rpc_in_flight", "RPCs being handled", ["service"], registry=registry)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opscale")
    except PackageNotFoundError:
        return "unknown"


def _standard_collectors(registry: CollectorRegistry, build: Mapping[str, str]) -> None:
    """``opscale_build_info`` and the collectors prometheus_client puts in its default registry
    (``process_*``, ``python_info``, ``python_gc_*``), here in ours."""
    info = Gauge(
        "opscale_build_info",
        "Always 1; labels say which opscale build and Python this process runs",
        list(build),
        registry=registry,
    )
    info.labels(*build.values()).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class _DropIdleRoots(SynchronousMultiSpanProcessor):
    """Hands every span to its processors except a ``PERIODIC`` root under which nothing happened: no
    span started in its trace while it was open, and it handed its context on to nobody."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._open: dict[int, bool] = {}  # trace id of an open periodic root -> did work

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        trace_id = span.context.trace_id
        if span.parent is None and span.attributes and span.attributes.get(PERIODIC):
            self._open[trace_id] = False
        elif trace_id in self._open:
            self._open[trace_id] = True
        super().on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.parent is None and span.attributes and span.attributes.get(PERIODIC):
            busy = self._open.pop(span.context.trace_id, False) if span.context else False
            if not busy and not span.attributes.get(HANDED_ON):
                return
        super().on_end(span)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def otlp_exporter(endpoint: str | None) -> SpanExporter | None:
    """The OTLP/gRPC span exporter ``endpoint`` (the ``otlp_endpoint`` setting) or the standard
    environment asks for, or None when export is off."""
    if _env_true("OTEL_SDK_DISABLED"):
        return None
    exporters = {e.strip() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    from_env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint and (not from_env or "otlp" not in exporters):
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol.strip() != "grpc":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: opscale exports OTLP over gRPC "
            "only; set it to 'grpc' (or unset it) and point the endpoint at the collector's gRPC port"
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # No endpoint argument: the exporter reads OTEL_EXPORTER_OTLP_* itself.
    return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()


class _Pipeline:
    """What every tracer provider of one process shares: where finished spans go."""

    def __init__(self, exporters: list[tuple[SpanExporter, bool]]) -> None:
        self.processor = _DropIdleRoots()
        for exporter, batched in exporters:
            processor = BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
            self.processor.add_span_processor(processor)
        self.providers: dict[str, TracerProvider] = {}

    def provider(self, service_name: str) -> TracerProvider:
        found = self.providers.get(service_name)
        if found is None:
            resource = Resource.create({"service.name": service_name, "service.version": _version()})
            found = TracerProvider(
                resource=resource, active_span_processor=self.processor, shutdown_on_exit=False
            )
            self.providers[service_name] = found
        return found


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    rpc: RpcMetrics
    service_name: str = "opscale"
    #: Whether ``service(name)`` gives each service its own service.name (several in one process).
    per_service: bool = False
    _pipeline: _Pipeline | None = field(default=None, repr=False)
    _owner: bool = field(default=True, repr=False)
    _metrics_server: WSGIServer | None = field(default=None, repr=False)
    _metrics_thread: threading.Thread | None = field(default=None, repr=False)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def service(self, name: str) -> Telemetry:
        """The telemetry one service of this process traces with: this one when the process runs one
        service, else one whose spans carry ``service.name`` ``<this name>-<name>`` (same registry and
        export pipeline)."""
        if not self.per_service or self._pipeline is None:
            return self
        return Telemetry(
            tracer_provider=self._pipeline.provider(f"{self.service_name}-{name}"),
            registry=self.registry,
            rpc=self.rpc,
            service_name=f"{self.service_name}-{name}",
            _pipeline=self._pipeline,
            _owner=False,
        )

    def serve_metrics(self, host: str, port: int) -> int:
        """Start the Prometheus /metrics endpoint; returns the bound port (useful when port is 0)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._metrics_server, self._metrics_thread = server, thread
        return int(server.server_port)

    def shutdown(self) -> None:
        """Stop the /metrics endpoint and flush the spans still batched (the process's own telemetry;
        a per-service view leaves both to it)."""
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self._owner:
            if self._pipeline is not None:
                self._pipeline.processor.shutdown()
            else:
                self.tracer_provider.shutdown()


def build_telemetry(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    span_exporter: SpanExporter | None = None,
    per_service: bool = False,
) -> Telemetry:
    """``span_exporter`` is for tests (an in-memory exporter); ``otlp_endpoint`` (or the standard
    ``OTEL_EXPORTER_OTLP_*`` environment) for production. ``OTEL_SERVICE_NAME`` overrides
    ``service_name``. ``per_service``: this process runs several services (``opscale up``), each to
    trace as itself (``Telemetry.service``). Raises ``ConfigError`` for an export setting it cannot
    honour."""
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    exporters: list[tuple[SpanExporter, bool]] = []
    if span_exporter is not None:
        exporters.append((span_exporter, False))
    otlp = otlp_exporter(otlp_endpoint)
    if otlp is not None:
        exporters.append((otlp, True))
    pipeline = _Pipeline(exporters)
    registry = CollectorRegistry()
    _standard_collectors(
        registry, {"version": _version(), "python_version": platform.python_version(), "service": name}
    )
    return Telemetry(
        tracer_provider=pipeline.provider(name),
        registry=registry,
        rpc=RpcMetrics(registry),
        service_name=name,
        per_service=per_service,
        _pipeline=pipeline,
    )


def current_trace_context() -> dict[str, str]:
    """The current span's context as W3C headers (``traceparent``, ``tracestate``), for carrying it
    across a hop that is not a gRPC call, such as a command queued in the database for an agent.
    Empty when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        trace.get_current_span().set_attribute(HANDED_ON, True)  # its trace goes on elsewhere
    return carrier


def context_from(carrier: Mapping[str, str]) -> otel_context.Context:
    """The parent context carried by ``carrier`` (see ``current_trace_context``); an empty carrier
    gives an empty context, so a span started under it is a new root."""
    return propagate.extract(dict(carrier))


class CancelledResetFilter(logging.Filter):
    """Drops SQLAlchemy's pool ERROR "Exception during reset or similar" when the exception is a
    cancellation: a client that cancels a stream (or a stopping service) cancels the handler mid-query
    and the pool's rollback of that connection is cancelled with it. The pool then discards the
    connection, which is the right outcome; the traceback told an operator nothing but alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.name.startswith("sqlalchemy.pool") and isinstance(exc, asyncio.CancelledError))


class TraceContextFilter(logging.Filter):
    """Stamps ``trace_id`` and ``span_id`` (hex, as trace back ends show them) of the span current when
    a record is emitted, so a log line can be found from its trace and the other way round."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return True


class _JsonFormatter(logging.Formatter):
    # Context that call sites pass through ``extra=`` (deployment, decision, replica ids) is kept, and
    # the trace ids that ``TraceContextFilter`` adds.
    _CONTEXT = (
        "deployment",
        "decision_id",
        "replica_id",
        "node",
        "service",
        "rpc",
        "ref",
        "trace_id",
        "span_id",
    )

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: getattr(record, k) for k in self._CONTEXT if hasattr(record, k)})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(level: LogLevel, fmt: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())  # on the handler: it sees records from every logger
    handler.addFilter(CancelledResetFilter())
    if fmt is LogFormat.JSON:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.value.upper())
    # Alembic narrates every migration step at INFO; only worth seeing when debugging.
    logging.getLogger("alembic").setLevel(logging.DEBUG if level is LogLevel.DEBUG else logging.WARNING)
