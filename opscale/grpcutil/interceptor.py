"""Server interceptor: one error path, one span and one set of metrics per RPC, and the edge every
request passes: who is calling (``opscale.grpcutil.auth``), then the request bytes decoded and checked
(``opscale.wire.validate``) before a servicer sees them.

Typed ``OpscaleError``s become their status from ``opscale.grpcutil.errors``; any other exception is our
bug and becomes INTERNAL with a reference id that is also in the log (with the traceback), so a caller
can report it without us sending internals over the wire.

Requests arrive as raw bytes (the handler's deserializer is taken over): a malformed frame, on any RPC
kind, is then INVALID_ARGUMENT naming the message type, not grpc's own INTERNAL/UNKNOWN. Methods named
in ``fast_paths`` are decoded but not walked field by field: their converter checks the same rules in
its single pass (ingest's sample pushes, at 100,000+ samples/s, cannot afford two).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeAlias

import grpc
from opentelemetry import propagate, trace

from opscale import errors
from opscale.grpcutil.auth import ANONYMOUS, Authenticator, Identity, set_identity
from opscale.grpcutil.errors import rich_status
from opscale.telemetry import SERVER_FAULTS, Telemetry
from opscale.wire.validate import decode_with

log = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class _Outcome:
    """Tracks the status code an RPC ended with, for metrics and the span."""

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK


Decoder: TypeAlias = Callable[[bytes], Any]


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        service: str,
        telemetry: Telemetry,
        *,
        auth: Authenticator | None = None,
        fast_paths: Collection[str] = (),
    ) -> None:
        self._service = service
        telemetry = telemetry.service(service)  # its own service.name when it shares a process
        self._telemetry = telemetry
        self._tracer = telemetry.tracer(f"opscale.{service}")
        self._auth = auth
        self._fast_paths = frozenset(fast_paths)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return handler  # type: ignore[return-value]
        method: str = handler_call_details.method
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        deserializer = handler.request_deserializer
        check = method.rsplit("/", 1)[-1] not in self._fast_paths

        def decode(raw: Any) -> Any:
            return decode_with(deserializer, raw, check=check) if deserializer is not None else raw

        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for attr, factory in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                return factory(
                    self._wrap(behavior, method, metadata, decode, attr.startswith("stream_")),
                    request_deserializer=None,  # raw bytes: decoded (and refused) by ``decode``
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _identify(self, method: str, metadata: dict[str, str], context: Context) -> Identity:
        """The caller, checked against the method's roles; raises Unauthenticated/PermissionDenied.
        It is set as the RPC's identity without a reset: grpc.aio runs each RPC in a task of its own."""
        if self._auth is None or self._auth.public(method):
            return ANONYMOUS
        identity = self._auth.identify(metadata, context.auth_context())
        self._auth.authorize(identity, method)
        return identity

    def _wrap(
        self,
        behavior: Callable[..., Any],
        method: str,
        metadata: dict[str, str],
        decode: Decoder,
        streaming_request: bool,
    ) -> Callable[..., Any]:
        def requests(raw: Any) -> Any:
            if not streaming_request:
                return decode(raw)

            async def decoded() -> AsyncIterator[Any]:
                async for frame in raw:
                    yield decode(frame)

            return decoded()

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                outcome, start = _Outcome(), self._begin()
                with self._span(method, metadata) as span:
                    try:
                        set_identity(self._identify(method, metadata, context))
                        async for response in behavior(requests(request), context):
                            yield response
                    except BaseException as exc:
                        await self._fail(exc, context, outcome, method)
                    finally:
                        self._end(method, outcome, start, span)

            return stream

        async def unary(request: Any, context: Context) -> Any:
            outcome, start = _Outcome(), self._begin()
            with self._span(method, metadata) as span:
                try:
                    set_identity(self._identify(method, metadata, context))
                    return await behavior(requests(request), context)
                except BaseException as exc:
                    await self._fail(exc, context, outcome, method)
                finally:
                    self._end(method, outcome, start, span)

        return unary

    def _span(self, method: str, metadata: dict[str, str]) -> Any:
        service, _, name = method.lstrip("/").partition("/")
        return self._tracer.start_as_current_span(
            method.lstrip("/"),
            context=propagate.extract(metadata),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            # The abort that ends a failed RPC is an exception: ``_end`` decides the status instead.
            record_exception=False,
            set_status_on_exception=False,
        )

    def _begin(self) -> float:
        self._telemetry.rpc.in_flight.labels(self._service).inc()
        return time.perf_counter()

    def _end(self, method: str, outcome: _Outcome, start: float, span: trace.Span) -> None:
        """Metrics and span status as the OpenTelemetry RPC conventions have them: the status code on
        both; a SERVER span is an error only for a server fault (``SERVER_FAULTS``)."""
        rpc = self._telemetry.rpc
        rpc.in_flight.labels(self._service).dec()
        service, _, name = method.lstrip("/").partition("/")
        code = outcome.code.value[0]
        rpc.duration.labels("grpc", service, name, str(code)).observe((time.perf_counter() - start) * 1000)
        span.set_attribute("rpc.grpc.status_code", code)
        if outcome.code in SERVER_FAULTS:
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.code.name))

    async def _fail(self, exc: BaseException, context: Context, outcome: _Outcome, method: str) -> None:
        """Record the outcome and turn ``exc`` into a status; always raises."""
        if isinstance(exc, errors.OpscaleError):
            status = rich_status(exc)
            outcome.code = status.code
            await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
        if isinstance(exc, asyncio.CancelledError):
            outcome.code = grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, grpc.aio.AbortError):
            # The handler (or a nested helper) aborted with a status of its own choosing.
            code = context.code()
            outcome.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            raise exc
        if not isinstance(exc, Exception):
            raise exc
        ref = uuid.uuid4().hex[:12]
        outcome.code = grpc.StatusCode.INTERNAL
        span = trace.get_current_span()  # the RPC's: a bug's traceback belongs in its trace
        span.record_exception(exc, attributes={"opscale.ref": ref})
        log.error(
            "unhandled error in %s (ref %s)", method, ref, exc_info=exc, extra={"rpc": method, "ref": ref}
        )
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see the service log")
