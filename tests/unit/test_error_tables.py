"""Every domain error has exactly one gRPC status and one CLI exit code; no error falls through."""

from __future__ import annotations

import grpc
import pytest

from opscale import errors
from opscale.cli.exit_codes import ExitCode, exit_for_error, exit_for_status
from opscale.grpcutil.errors import status_for


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


ERRORS = _all_subclasses(errors.OpscaleError)


def _instance(cls: type[errors.OpscaleError]) -> errors.OpscaleError:
    """One of ``cls``; a subclass with its own constructor (e.g. a trace's error naming line and column)
    gets the base class's, as the tables map by class only."""
    try:
        return cls("x")
    except TypeError:
        err = cls.__new__(cls)
        errors.OpscaleError.__init__(err, "x")
        return err


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_maps_to_a_caller_status(cls: type[errors.OpscaleError]) -> None:
    code = status_for(_instance(cls))
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    assert exit_for_status(code) is exit_for_error(_instance(cls))


def test_specific_mappings() -> None:
    assert status_for(errors.StaleVersion("x")) is grpc.StatusCode.ABORTED
    assert status_for(errors.Unavailable("x")) is grpc.StatusCode.UNAVAILABLE
    assert exit_for_error(errors.NotFound("x")) is ExitCode.NOT_FOUND
    assert exit_for_status(grpc.StatusCode.INTERNAL) is ExitCode.INTERNAL
