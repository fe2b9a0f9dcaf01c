"""``opscale.placement`` is a pure core (CONVENTIONS habit 4): no network, database, telemetry, clock,
randomness or environment; values are frozen slotted dataclasses; files stay readable (habit 14)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import opscale.placement

FORBIDDEN = {"grpc", "sqlalchemy", "redis", "opentelemetry", "time", "random", "datetime", "os", "numpy"}
MODULE_FILES = sorted(Path(opscale.placement.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_no_files_or_environment(path: Path) -> None:
    for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
        assert not (isinstance(call.func, ast.Name) and call.func.id == "open"), f"{path.name} opens a file"
        assert not (isinstance(call.func, ast.Attribute) and call.func.attr in ("environ", "getenv"))


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_files_stay_readable(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 400


def test_values_are_frozen_slotted_dataclasses() -> None:
    found = 0
    for info in pkgutil.iter_modules(opscale.placement.__path__):
        module = importlib.import_module(f"opscale.placement.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls):
                found += 1
                params = cls.__dataclass_params__  # type: ignore[attr-defined]
                assert params.frozen, f"{cls.__qualname__} is not frozen"
                assert "__slots__" in cls.__dict__, f"{cls.__qualname__} is not slotted"
    assert found >= 8  # Topology, GpuSlot, NodeInfo, PoolDemand, PlacedReplica, PlacementInput, ...
