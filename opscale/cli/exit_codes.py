"""The one table from errors to CLI exit codes (and the one-line message the user sees).

Domain errors raised in-process (``opscale db upgrade``, ``opscale up``) and gRPC statuses from a remote
service map to the same codes, so scripts can rely on them whichever way the CLI ran.
"""

from __future__ import annotations

import enum

import grpc

from opscale import errors


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2  # bad flags, bad config, invalid argument: the caller's input
    NOT_FOUND = 3
    CONFLICT = 4  # already exists, or a stale expected version
    PRECONDITION = 5  # e.g. the database schema is not at head; a node is cordoned
    UNAVAILABLE = 6  # a service or dependency cannot be reached
    INTERNAL = 7
    DENIED = 8  # no valid credentials, or the caller's role may not do this


EXIT_FOR_ERROR: dict[type[errors.OpscaleError], ExitCode] = {
    errors.InvalidArgument: ExitCode.USAGE,
    errors.ConfigError: ExitCode.USAGE,
    errors.NotFound: ExitCode.NOT_FOUND,
    errors.AlreadyExists: ExitCode.CONFLICT,
    errors.StaleVersion: ExitCode.CONFLICT,
    errors.FailedPrecondition: ExitCode.PRECONDITION,
    errors.ResourceExhausted: ExitCode.PRECONDITION,
    errors.Unavailable: ExitCode.UNAVAILABLE,
    errors.Unimplemented: ExitCode.FAILURE,
    errors.Unauthenticated: ExitCode.DENIED,
    errors.PermissionDenied: ExitCode.DENIED,
    errors.DeadlineExceeded: ExitCode.UNAVAILABLE,
}

EXIT_FOR_STATUS: dict[grpc.StatusCode, ExitCode] = {
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.USAGE,
    grpc.StatusCode.OUT_OF_RANGE: ExitCode.USAGE,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ExitCode.CONFLICT,
    grpc.StatusCode.ABORTED: ExitCode.CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitCode.PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL: ExitCode.INTERNAL,
    grpc.StatusCode.UNKNOWN: ExitCode.INTERNAL,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.DENIED,
}


def exit_for_error(exc: errors.OpscaleError) -> ExitCode:
    for cls in type(exc).__mro__:
        if cls in EXIT_FOR_ERROR:
            return EXIT_FOR_ERROR[cls]
    return ExitCode.FAILURE


def exit_for_status(code: grpc.StatusCode) -> ExitCode:
    return EXIT_FOR_STATUS.get(code, ExitCode.FAILURE)
