"""Every domain error has exactly one gRPC status and one CLI exit code; no error falls through."""

from __future__ import annotations

import grpc
import pytest

from clients.cli.exit_codes import ExitCode, exit_for_error, exit_for_status
from opscale import errors
from opscale.grpcutil.errors import status_for


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


ERRORS = _all_subclasses(errors.OpscaleError)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_maps_to_a_caller_status(cls: type[errors.OpscaleError]) -> None:
    code = status_for(cls("x"))
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    assert exit_for_status(code) is exit_for_error(cls("x"))


def test_specific_mappings() -> None:
    assert status_for(errors.StaleVersion("x")) is grpc.StatusCode.ABORTED
    assert status_for(errors.Unavailable("x")) is grpc.StatusCode.UNAVAILABLE
    assert exit_for_error(errors.NotFound("x")) is ExitCode.NOT_FOUND
    assert exit_for_status(grpc.StatusCode.INTERNAL) is ExitCode.INTERNAL
