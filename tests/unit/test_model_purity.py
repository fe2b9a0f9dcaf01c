"""``opscale.model`` is a pure core (CONVENTIONS.md habit 4): no network, database, telemetry, clock or
randomness, and no file reads except its own package data and a path the caller passes in."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import opscale.model

FORBIDDEN = {"grpc", "sqlalchemy", "redis", "opentelemetry", "time", "random", "datetime", "os.environ"}
# The only place a file is opened: the caller-supplied path of load_profile_file.
OPEN_ALLOWED = {("profiles.py", "load_profile_file")}

MODULE_FILES = sorted(Path(opscale.model.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_files_are_opened_only_where_the_caller_chose_them(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
            if isinstance(call.func, ast.Name) and call.func.id == "open":
                assert (path.name, func.name) in OPEN_ALLOWED, f"{path.name}:{func.name} opens a file"
            if isinstance(call.func, ast.Attribute) and call.func.attr in ("environ", "getenv"):
                pytest.fail(f"{path.name}:{func.name} reads the environment")


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_files_stay_readable(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 400


def test_values_are_frozen_slotted_dataclasses() -> None:
    for info in pkgutil.iter_modules(opscale.model.__path__):
        module = importlib.import_module(f"opscale.model.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls):
                params = cls.__dataclass_params__  # type: ignore[attr-defined]
                assert params.frozen, f"{cls.__qualname__} is not frozen"
                assert "__slots__" in cls.__dict__, f"{cls.__qualname__} is not slotted"
