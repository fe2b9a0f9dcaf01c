"""The one place from domain errors to gRPC status: the code, the message, and ``google.rpc`` details.

Servicers never pick status codes themselves: they let typed ``OpscaleError``s propagate and the
interceptor translates them here. Anything else is our bug: INTERNAL, logged with a reference the
caller sees, details never sent.

Every typed error carries a ``google.rpc.ErrorInfo`` (reason: the error class in UPPER_SNAKE, domain
``opscale``; metadata: the field, and for a lost compare-and-swap the expected and actual versions) and,
when it names a field, INVALID_ARGUMENT also carries a ``google.rpc.BadRequest`` field violation — the
standard rich error model (``grpc-status-details-bin``), which gRPC clients in any language can unpack
(grpcio-status's ``rpc_status.from_call`` in Python).
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from opscale import errors

DOMAIN = "opscale"

STATUS_FOR: dict[type[errors.OpscaleError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.StaleVersion: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(exc: errors.OpscaleError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL


def reason_of(exc: errors.OpscaleError) -> str:
    """``InvalidArgument`` → ``INVALID_ARGUMENT``: ErrorInfo's reason, stable as the class name is."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).upper()


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def rich_status(exc: errors.OpscaleError) -> grpc.Status:
    """``exc`` as a status whose trailing metadata carries the ``google.rpc.Status`` with details."""
    code = status_for(exc)
    metadata = {"field": exc.field} if exc.field else {}
    if isinstance(exc, errors.StaleVersion):
        metadata.update(
            {k: str(v) for k, v in (("expected", exc.expected), ("actual", exc.actual)) if v is not None}
        )
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason_of(exc), domain=DOMAIN, metadata=metadata))]
    if exc.field and code is grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.message)
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    return rpc_status.to_status(status)
