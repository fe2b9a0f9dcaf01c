"""Typed domain errors.

Domain and app code raise these; exactly one table (``opscale.grpcutil.errors``) maps each class to a
gRPC status code, and the CLI maps the status code to an exit code. Messages are public: they name the
field or object at fault and, where there is one, the allowed range. Never put secrets or stack traces
in them.
"""

from __future__ import annotations


class OpscaleError(Exception):
    """Base of every error that is the caller's or the environment's doing, not a bug of ours."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidArgument(OpscaleError):
    """The request itself is malformed: a field is missing, out of range or inconsistent."""


class NotFound(OpscaleError):
    """The named object does not exist."""


class AlreadyExists(OpscaleError):
    """Creating an object whose name is taken."""


class FailedPrecondition(OpscaleError):
    """The system is not in a state where the request can run (e.g. schema not at head, node cordoned)."""


class StaleVersion(OpscaleError):
    """Compare-and-swap lost: the caller's expected version is not the stored one."""

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class ResourceExhausted(OpscaleError):
    """A quota or size limit was hit (batch too large, capacity exhausted)."""


class Unavailable(OpscaleError):
    """A dependency (database, Redis, another service) cannot be reached; retrying may help."""


class Unimplemented(OpscaleError):
    """The capability exists in the API but is delivered by a later piece of work."""


class Unauthenticated(OpscaleError):
    """Authentication is configured and the caller presented no valid credentials."""


class PermissionDenied(OpscaleError):
    """The authenticated caller's role (or node) does not allow this request."""


class DeadlineExceeded(OpscaleError):
    """The work did not finish within its budget (e.g. what-if planning's CPU time); it was stopped."""


class ConfigError(OpscaleError):
    """A configuration value is invalid; raised at start-up, before anything is served."""
