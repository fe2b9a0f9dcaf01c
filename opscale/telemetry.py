"""Telemetry built once per process and injected: OpenTelemetry tracing, Prometheus metrics, logging.

Every service gets the same ``Telemetry`` object; nothing reaches for a global provider or the
prometheus_client default registry, so several services (``opscale up``) and many tests can live in one
process without colliding.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from opscale.config import LogFormat, LogLevel


class RpcMetrics:
    """Per-RPC counters and latency, labelled by service, method and status code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "opscale_rpc_requests",
            "RPCs handled, by outcome",
            ["service", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "opscale_rpc_duration_seconds",
            "Time to handle an RPC (streams: until the stream ends)",
            ["service", "method"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("opscale_rpc_in_flight", "RPCs being handled", ["service"], registry=registry)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    rpc: RpcMetrics
    _metrics_server: WSGIServer | None = field(default=None, repr=False)
    _metrics_thread: threading.Thread | None = field(default=None, repr=False)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def serve_metrics(self, host: str, port: int) -> int:
        """Start the Prometheus /metrics endpoint; returns the bound port (useful when port is 0)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._metrics_server, self._metrics_thread = server, thread
        return int(server.server_port)

    def shutdown(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        self.tracer_provider.shutdown()


def build_telemetry(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    span_exporter: SpanExporter | None = None,
) -> Telemetry:
    """``span_exporter`` is for tests (an in-memory exporter); ``otlp_endpoint`` for production."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    registry = CollectorRegistry()
    return Telemetry(tracer_provider=provider, registry=registry, rpc=RpcMetrics(registry))


def current_trace_context() -> dict[str, str]:
    """The current span's context as W3C headers (``traceparent``, ``tracestate``), for carrying it
    across a hop that is not a gRPC call, such as a command queued in the database for an agent.
    Empty when no span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
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
