"""Log records emitted inside a span carry its trace and span ids; trace context survives a
non-gRPC hop (a dict, as a command payload carries it)."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opscale.telemetry import (
    CancelledResetFilter,
    TraceContextFilter,
    _JsonFormatter,
    build_telemetry,
    context_from,
    current_trace_context,
)


def _logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(_JsonFormatter())
    logger = logging.getLogger("test.telemetry.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_a_record_inside_a_span_carries_its_ids_and_one_outside_carries_none() -> None:
    telemetry = build_telemetry("opscale-test", span_exporter=InMemorySpanExporter())
    logger, out = _logger()
    with telemetry.tracer("test").start_as_current_span("work") as span:
        logger.info("inside", extra={"deployment": "d1"})
    logger.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    ctx = span.get_span_context()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}" and inside["span_id"] == f"{ctx.span_id:016x}"
    assert inside["deployment"] == "d1"
    assert "trace_id" not in outside and "span_id" not in outside


def test_trace_context_round_trips_through_a_plain_dict() -> None:
    tracer = build_telemetry("opscale-test", span_exporter=InMemorySpanExporter()).tracer("test")
    assert current_trace_context() == {}  # no span: nothing to carry, the receiver starts a new trace
    with tracer.start_as_current_span("sender") as sender:
        carrier = current_trace_context()
    with tracer.start_as_current_span("receiver", context=context_from(carrier)) as receiver:
        pass
    assert set(carrier) >= {"traceparent"}
    got, sent = receiver.get_span_context(), sender.get_span_context()
    assert got.trace_id == sent.trace_id
    parent = getattr(receiver, "parent", None)
    assert parent is not None and parent.span_id == sent.span_id
    with tracer.start_as_current_span("root", context=context_from({})) as root:
        pass
    assert getattr(root, "parent", None) is None


def test_a_cancelled_pool_reset_is_dropped_and_every_other_pool_error_kept() -> None:
    keep = CancelledResetFilter().filter

    def record(name: str, exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            name, logging.ERROR, __file__, 1, "Exception during reset", None, (type(exc), exc, None)
        )

    assert not keep(record("sqlalchemy.pool.impl.AsyncAdaptedQueuePool", asyncio.CancelledError()))
    assert keep(record("sqlalchemy.pool.impl.AsyncAdaptedQueuePool", OSError("disk gone")))
    assert keep(record("opscale.services.decision.loop", asyncio.CancelledError()))
