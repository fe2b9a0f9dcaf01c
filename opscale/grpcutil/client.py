"""Client channels: TLS from ``opscale.grpcutil.tls``, a bearer token in every call's metadata, and one
CLIENT span per outgoing RPC with its context injected into the call metadata.

The server side (``opscale.grpcutil.interceptor``) extracts the W3C ``traceparent`` from the metadata,
so a call made inside a span (a decision tick handing counts to placement) continues that span's trace
on the other service.

Span end: a streaming response is read by the caller after the interceptor returns, and a stream-unary
call driven by ``write()`` cannot complete before the interceptor hands the call back, so for those kinds
a small task waits for the call's status and ends the span. Unary-unary is awaited in place instead, so
its span has ended by the time the caller sees the response (the parent span's timing stays exact and
tests need not wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import grpc
from opentelemetry import propagate, trace

from opscale.grpcutil.tls import TlsFiles, channel_credentials, channel_options

if TYPE_CHECKING:  # the CLI and SDK import this module; telemetry's SDK and Prometheus are for services
    from opscale.telemetry import Telemetry

TRACER_NAME = "opscale.grpc.client"


def _code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code()
    return grpc.StatusCode.CANCELLED if isinstance(exc, asyncio.CancelledError) else grpc.StatusCode.UNKNOWN


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """What a client presents: TLS (a CA to verify servers, a certificate of its own) and a token."""

    tls: TlsFiles = field(default_factory=TlsFiles)
    token: str = ""

    @classmethod
    def of(cls, settings: Any) -> ClientSecurity:
        """From a ``Settings`` (``tls_*`` and ``token``)."""
        return cls(TlsFiles.of(settings), settings.token)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


PLAINTEXT = ClientSecurity()


class _Tracing:
    """What the four interceptor kinds share: start the span, inject its context and the credentials'
    metadata, end it on status."""

    def __init__(self, tracer: trace.Tracer, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self._tracer = tracer
        self._extra = extra
        self._finishers: set[asyncio.Task[None]] = set()  # held so the loop does not collect them

    def start(self, details: grpc.aio.ClientCallDetails) -> tuple[trace.Span, grpc.aio.ClientCallDetails]:
        raw = details.method
        method = (raw.decode() if isinstance(raw, bytes) else str(raw)).lstrip("/")
        service, _, name = method.partition("/")
        span = self._tracer.start_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()))
        for key, value in (*carrier.items(), *self._extra):
            metadata[key] = value  # replaces a traceparent the caller may have set by hand
        injected = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return span, injected

    @staticmethod
    def end(span: trace.Span, code: grpc.StatusCode | None) -> None:
        code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
        span.end()

    async def _finish(self, call: Any, span: trace.Span) -> None:
        code = grpc.StatusCode.CANCELLED  # the loop shut down before the call ended
        try:
            code = await call.code()
        finally:
            self.end(span, code)

    def end_when_done(self, call: Any, span: trace.Span) -> None:
        task = asyncio.ensure_future(self._finish(call, span))
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)

    async def unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span, injected = self.start(details)
        try:
            call = await continuation(injected, request)
        except BaseException as exc:
            self.end(span, _code_of(exc))
            raise
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            self.end(span, exc.code())
        except BaseException as exc:
            self.end(span, _code_of(exc))
            raise
        else:
            self.end(span, grpc.StatusCode.OK)
        return call  # done: awaiting it again gives the caller the response or the same error

    async def deferred(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span, injected = self.start(details)
        try:
            call = await continuation(injected, request)
        except BaseException as exc:
            self.end(span, _code_of(exc))
            raise
        self.end_when_done(call, span)
        return call


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, tracing: _Tracing) -> None:
        self._tracing = tracing

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._tracing.unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, tracing: _Tracing) -> None:
        self._tracing = tracing

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._tracing.deferred(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, tracing: _Tracing) -> None:
        self._tracing = tracing

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._tracing.deferred(continuation, client_call_details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, tracing: _Tracing) -> None:
        self._tracing = tracing

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._tracing.deferred(continuation, client_call_details, request_iterator)


def client_interceptors(
    telemetry: Telemetry | None, security: ClientSecurity = PLAINTEXT
) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind (grpc.aio files each interceptor under one kind only)."""
    tracer = telemetry.tracer(TRACER_NAME) if telemetry is not None else trace.NoOpTracer()
    tracing = _Tracing(tracer, security.metadata())
    kinds = (_UnaryUnary(tracing), _UnaryStream(tracing), _StreamUnary(tracing), _StreamStream(tracing))
    # grpc-stubs leaves ClientInterceptor a placeholder that every interceptor must be cast to.
    return [cast(grpc.aio.ClientInterceptor, k) for k in kinds]


def instrumented_channel(
    target: str,
    telemetry: Telemetry | None,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
    security: ClientSecurity = PLAINTEXT,
) -> grpc.aio.Channel:
    """A grpc.aio channel to ``target`` with ``security``'s TLS and token, every RPC traced with
    ``telemetry``'s tracer provider (none: spans are not recorded)."""
    interceptors = client_interceptors(telemetry, security)
    opts = [*(options or ()), *channel_options(security.tls)]
    credentials = channel_credentials(security.tls)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)


class _SyncMetadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the credentials' metadata to every call of a blocking channel."""

    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self._extra = extra

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), *self._extra]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self, method: str, timeout: float | None, metadata: Any, credentials: Any, wait: Any, compression: Any
    ) -> None:
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait, compression


def sync_channel(
    target: str, security: ClientSecurity = PLAINTEXT, *, options: Sequence[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A blocking channel to ``target`` with ``security``'s TLS and token (CLI, sync SDK)."""
    opts = [*(options or ()), *channel_options(security.tls)]
    credentials = channel_credentials(security.tls)
    channel = (
        grpc.secure_channel(target, credentials, options=opts)
        if credentials is not None
        else grpc.insecure_channel(target, options=opts)
    )
    extra = security.metadata()
    return grpc.intercept_channel(channel, _SyncMetadata(extra)) if extra else channel
