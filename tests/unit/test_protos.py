"""The API surface follows the proto rules, and the checked-in stubs match the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FileDescriptor

from opscale.api.agent.v1 import agent_pb2
from opscale.api.common.v1 import common_pb2
from opscale.api.decision.v1 import decision_pb2
from opscale.api.ingest.v1 import ingest_pb2
from opscale.api.placement.v1 import placement_pb2

ROOT = Path(__file__).resolve().parents[2]
FILES: list[FileDescriptor] = [
    m.DESCRIPTOR for m in (common_pb2, ingest_pb2, decision_pb2, placement_pb2, agent_pb2)
]


def test_generated_stubs_match_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protos.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_package_matches_directory(file: FileDescriptor) -> None:
    # protos/opscale/api/decision/v1/decision.proto must be package opscale.api.decision.v1
    assert file.package == str(Path(file.name).parent).replace("/", ".")
    assert file.package.endswith(".v1")


def _enums(file: FileDescriptor) -> list[object]:
    found = list(file.enum_types_by_name.values())
    stack = list(file.message_types_by_name.values())
    while stack:
        message = stack.pop()
        found.extend(message.enum_types)
        stack.extend(message.nested_types)
    return found


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_enums_start_unspecified(file: FileDescriptor) -> None:
    for enum in _enums(file):
        zero = enum.values_by_number[0].name  # type: ignore[attr-defined]
        assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: value 0 is {zero}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_each_rpc_has_its_own_request_and_response(file: FileDescriptor) -> None:
    for service in file.services_by_name.values():
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request", method.full_name
            assert method.output_type.name == f"{method.name}Response", method.full_name
