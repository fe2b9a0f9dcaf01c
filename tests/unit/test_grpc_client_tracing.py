"""Client interceptors: every call kind gets a CLIENT span under the caller's span, and the server sees
that span's context in its metadata. A tiny in-process server with raw-bytes handlers echoes the
``traceparent`` it received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opscale.grpcutil.client import instrumented_channel, sync_channel
from opscale.telemetry import Telemetry, build_telemetry

SERVICE = "test.v1.Echo"


def _traceparent(context: Any) -> bytes:
    metadata = dict(context.invocation_metadata() or ())
    return str(metadata.get("traceparent", "")).encode()


async def _unary(request: bytes, context: Any) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"who":  # the caller's own metadata must survive the injection
        return str(dict(context.invocation_metadata() or ()).get("x-caller", "")).encode()
    return _traceparent(context)


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield _traceparent(context)
    yield b"second"


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    _ = [r async for r in requests]
    return _traceparent(context)


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield _traceparent(context)


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Telemetry:
    return build_telemetry("opscale-test", span_exporter=exporter)


async def _client_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    # Streaming calls end their span from a task once the status arrives: give it a moment.
    for _ in range(200):
        found = [s for s in exporter.get_finished_spans() if s.name == f"{SERVICE}/{name}"]
        if found:
            assert len(found) == 1
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no client span for {name}")


def _ids(traceparent: bytes) -> tuple[str, str]:
    # W3C: version-traceid-parentid-flags; the flags (sampled, random) are the SDK's business.
    _version, trace_id, parent_id, _flags = traceparent.decode().split("-")
    return trace_id, parent_id


def _ids_of(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def _requests() -> AsyncIterator[bytes]:
    for item in (b"a", b"b"):
        yield item


@pytest.mark.parametrize("kind", ["Unary", "ServerStream", "ClientStream", "Bidi"])
async def test_each_call_kind_gets_a_client_span_whose_context_reaches_the_server(
    address: str, telemetry: Telemetry, exporter: InMemorySpanExporter, kind: str
) -> None:
    tracer = telemetry.tracer("test")
    channel = instrumented_channel(address, telemetry)
    method = f"/{SERVICE}/{kind}"
    try:
        with tracer.start_as_current_span("caller") as caller:
            if kind == "Unary":
                seen = [await channel.unary_unary(method, None, None)(b"x", timeout=5)]
            elif kind == "ServerStream":
                seen = [r async for r in channel.unary_stream(method, None, None)(b"x", timeout=5)]
            elif kind == "ClientStream":
                seen = [await channel.stream_unary(method, None, None)(_requests(), timeout=5)]
            else:
                seen = [r async for r in channel.stream_stream(method, None, None)(_requests(), timeout=5)]
        span = await _client_span(exporter, kind)
    finally:
        await channel.close(None)
    assert span.kind is trace.SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.context.trace_id == caller.get_span_context().trace_id
    assert span.attributes is not None
    assert span.attributes["rpc.system"] == "grpc"
    assert (span.attributes["rpc.service"], span.attributes["rpc.method"]) == (SERVICE, kind)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    # The server received the CLIENT span (not the caller) as its parent.
    assert _ids(seen[0]) == _ids_of(span)


async def test_a_failed_call_marks_its_span_and_the_caller_still_gets_the_error(
    address: str, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    channel = instrumented_channel(address, telemetry)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(f"/{SERVICE}/Unary", None, None)(b"fail", timeout=5)
        span = await _client_span(exporter, "Unary")
    finally:
        await channel.close(None)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such thing"
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.status.status_code is trace.StatusCode.ERROR


async def test_a_call_outside_any_span_starts_a_trace_and_keeps_caller_metadata(
    address: str, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    channel = instrumented_channel(address, telemetry)
    unary = channel.unary_unary(f"/{SERVICE}/Unary", None, None)
    try:
        seen = await unary(b"x", timeout=5, metadata=(("x-caller", "me"),))
        span = await _client_span(exporter, "Unary")
        caller = await unary(b"who", timeout=5, metadata=(("x-caller", "me"),))
    finally:
        await channel.close(None)
    assert span.parent is None
    assert _ids(seen) == _ids_of(span)
    assert caller == b"me"


# --- without opscale telemetry: the SDK and the CLI carry the caller's trace --------------------------

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"


async def test_the_async_sdk_channel_carries_the_applications_trace(
    address: str, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A serving framework's span (its own tracer provider, not the SDK's): no telemetry is given to the
    # channel, as in AsyncOpscaleClient, yet the call continues the framework's trace.
    monkeypatch.delenv("TRACEPARENT", raising=False)
    channel = instrumented_channel(address, None)
    try:
        with telemetry.tracer("framework").start_as_current_span("request") as framework:
            seen = await channel.unary_unary(f"/{SERVICE}/Unary", None, None)(b"x", timeout=5)
    finally:
        await channel.close(None)
    assert _ids(seen)[0] == f"{framework.get_span_context().trace_id:032x}"


def _sync_traceparent(address: str) -> bytes:
    with sync_channel(address) as channel:
        reply = channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=5)
    assert isinstance(reply, bytes)
    return reply


async def test_the_blocking_channel_carries_the_current_trace_or_traceparent_from_the_environment(
    address: str, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACEPARENT", raising=False)
    assert await asyncio.to_thread(_sync_traceparent, address) == b""  # nothing to carry
    with telemetry.tracer("cli").start_as_current_span("command") as command:
        seen = await asyncio.to_thread(_sync_traceparent, address)  # to_thread copies the context
    assert _ids(seen) == _ids_of_span(command)
    # A script that runs `opscale …` inside its trace exports TRACEPARENT: the command continues it.
    monkeypatch.setenv("TRACEPARENT", CALLER_TRACEPARENT)
    seen = await asyncio.to_thread(_sync_traceparent, address)
    assert _ids(seen) == (CALLER_TRACE, "b7ad6b7169203331")
    monkeypatch.setenv("TRACEPARENT", "not-a-traceparent")
    assert await asyncio.to_thread(_sync_traceparent, address) == b""  # ignored, not an error


def _ids_of_span(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
