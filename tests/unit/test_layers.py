"""The layer contract, in one place (CONVENTIONS habits 4, 14, 15): who may import whom.

1. The core (``opscale/`` but its services and clients) imports neither ``opscale.services`` nor a
   client (``opscale.cli``, ``opscale.agent``, ``opscale.sdk``, ``opscale.worker``, ``opscale.demo``).
2. Pure cores (``opscale/model``, ``opscale/policy``, ``opscale/placement``, the pool vocabulary, the
   actuation types and the simulator's core) import no network, database, telemetry, clock or
   randomness; they open no files (but the one caller-chosen profile path) and read no environment; the
   model's and placement's values are frozen slotted dataclasses and their files stay readable.
3. A service (``opscale/services/<name>/``) imports no other service and never the CLI; the composition root
   (``opscale/services/catalog.py``, ``main.py``, ``runtime.py``) may import them all.
4. Clients (CLI, agent, SDK, demo) reach services only through that composition root, never a service's
   modules (their converters live in ``opscale.wire``).

Imports are read with ``ast`` from every file, inside functions too, so a lazy import is no way round.
Each rule is checked on the tree and shown able to fail on a made-up offender.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO = {"grpc", "sqlalchemy", "redis", "opentelemetry", "time", "random", "datetime", "asyncio", "socket"}
PURE: dict[str, set[str]] = {
    # module path (file or package) -> what it must not import beyond IO
    "opscale/model": set(),
    "opscale/policy": set(),
    "opscale/placement": {"os", "numpy"},
    "opscale/pools.py": {"os"},
    "opscale/actuation.py": {"os"},
    "opscale/sim/engine.py": set(),
    "opscale/sim/run.py": set(),
    "opscale/sim/feed.py": set(),
    "opscale/sim/accounting.py": set(),
}
OPEN_ALLOWED = {("opscale/model/profiles.py", "load_profile_file")}  # the caller-supplied path
FROZEN_VALUES = ("opscale.model", "opscale.placement")
SERVICES = "opscale.services"
CLIENTS = ("opscale.cli", "opscale.agent", "opscale.sdk", "opscale.worker", "opscale.demo")
NOT_CORE = (SERVICES, *CLIENTS, "opscale.migrations")
COMPOSITION_ROOT = {f"{SERVICES}.catalog", f"{SERVICES}.main", f"{SERVICES}.runtime", SERVICES}


def _files(top: str) -> list[Path]:
    path = ROOT / top
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, relative imports resolved, wherever the import statement is."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            yield ".".join([*base, *([node.module] if node.module else [])])


def _top(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _core_files() -> list[Path]:
    return [p for p in _files("opscale") if not _within(_module(p), NOT_CORE)]


def _client_files() -> list[Path]:
    return [p for top in CLIENTS for p in _files(top.replace(".", "/"))]


def core_offenders(files: list[Path]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)}: {m}" for p in files for m in imports(p) if _within(m, (SERVICES, *CLIENTS))
    ]


def pure_offenders(files: list[Path], extra: set[str]) -> list[str]:
    banned = IO | extra
    return [f"{p.relative_to(ROOT)}: {m}" for p in files for m in imports(p) if _top(m) in banned]


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and module.startswith(SERVICES + ".") else None


def service_offenders(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        own = service_of(_module(path))
        if own is None:
            continue  # the composition root
        # `python -m opscale.services.x` runs it through the composition root
        wiring = path.name == "__main__.py"
        for m in imports(path):
            other = service_of(m)
            crossing = other is not None and other != own
            root = m in {f"{SERVICES}.catalog", f"{SERVICES}.main"} and not wiring
            if _within(m, CLIENTS) or root or crossing:
                out.append(f"{path.relative_to(ROOT)}: {m}")
    return out


def client_offenders(files: list[Path]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)}: {m}"
        for p in files
        for m in imports(p)
        if _within(m, (SERVICES,)) and m not in COMPOSITION_ROOT
    ]


# --- 1. the core imports no service and no client ------------------------------------------------------


def test_the_core_imports_no_service_or_client() -> None:
    assert core_offenders(_core_files()) == []


# --- 2. pure cores -------------------------------------------------------------------------------------


@pytest.mark.parametrize("top", sorted(PURE))
def test_pure_cores_import_no_io(top: str) -> None:
    assert pure_offenders(_files(top), PURE[top]) == []


@pytest.mark.parametrize("top", sorted(PURE))
def test_pure_cores_open_no_files_and_read_no_environment(top: str) -> None:
    for path in _files(top):
        rel = str(path.relative_to(ROOT))
        for func in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)):
            for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
                if isinstance(call.func, ast.Name) and call.func.id == "open":
                    assert (rel, func.name) in OPEN_ALLOWED, f"{rel}:{func.name} opens a file"
                if isinstance(call.func, ast.Attribute):
                    assert call.func.attr not in ("environ", "getenv"), (
                        f"{rel}:{func.name} reads the environment"
                    )
                    # np.random.default_rng / seed: a simulation's generator comes from its caller.
                    assert call.func.attr not in ("default_rng", "seed"), (
                        f"{rel}:{func.name} seeds randomness"
                    )


@pytest.mark.parametrize("top", ["opscale/model", "opscale/placement", "opscale/policy"])
def test_pure_core_files_stay_readable(top: str) -> None:
    for path in _files(top):
        assert len(path.read_text().splitlines()) <= 400, path.relative_to(ROOT)


@pytest.mark.parametrize("package", FROZEN_VALUES)
def test_values_are_frozen_slotted_dataclasses(package: str) -> None:
    found = 0
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls):
                found += 1
                params = cls.__dataclass_params__  # type: ignore[attr-defined]
                assert params.frozen and "__slots__" in cls.__dict__, cls.__qualname__
    assert found >= 8


def test_traces_generate_only_from_a_passed_generator() -> None:
    text = (ROOT / "opscale" / "sim" / "traces.py").read_text()
    assert "default_rng" not in text and "import random" not in text


# --- 3. services stand alone ----------------------------------------------------------------------------


def test_services_import_no_other_service_and_no_cli() -> None:
    assert service_offenders(_files("opscale/services")) == []


# --- 4. clients use the composition root only ------------------------------------------------------------


def test_clients_reach_services_only_through_the_composition_root() -> None:
    assert client_offenders(_client_files()) == []


# --- each rule can fail ------------------------------------------------------------------------------------


def test_every_rule_catches_an_offender(tmp_path: Path) -> None:
    def fake(rel: str, text: str) -> Path:
        path = ROOT / rel
        return _Fake(path, text)

    class _Fake(type(ROOT)):  # type: ignore[misc]
        def __new__(cls, path: Path, text: str) -> _Fake:
            self = super().__new__(cls, path)
            self._text = text
            return self

        def read_text(self, *args: object, **kwargs: object) -> str:
            return self._text

    assert core_offenders(
        [fake("opscale/x.py", "def f():\n    from opscale.services.decision import loop\n")]
    )
    assert pure_offenders([fake("opscale/policy/x.py", "import time\n")], set())
    assert pure_offenders([fake("opscale/placement/x.py", "from . import y\nimport numpy\n")], {"numpy"})
    assert service_offenders(
        [fake("opscale/services/keda/x.py", "from opscale.services.decision.record import X\n")]
    )
    assert service_offenders(
        [fake("opscale/services/keda/__main__.py", "from opscale.cli.main import app\n")]
    )
    assert not service_offenders(
        [fake("opscale/services/keda/__main__.py", "from opscale.services.main import main\n")]
    )
    assert not service_offenders(
        [fake("opscale/services/keda/x.py", "from opscale.services.keda.app import X\n")]
    )
    assert client_offenders(
        [fake("opscale/cli/x.py", "from opscale.services.decision.convert import spec_to_pb\n")]
    )
    assert not client_offenders([fake("opscale/cli/x.py", "from opscale.services.main import serve\n")])
    # relative imports resolve to the package they name
    assert list(imports(fake("opscale/sim/x.py", "from ..wire import specs\n"))) == ["opscale.wire"]
