"""The simulator's core is pure like the model and policy cores (CONVENTIONS.md habit 4): no clock, no
randomness of its own (a seeded ``numpy.random.Generator`` is passed in), no network or database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import opscale.sim

FORBIDDEN = {"grpc", "sqlalchemy", "redis", "opentelemetry", "time", "random", "datetime"}
CORE = ("engine.py", "run.py", "feed.py", "accounting.py")
SIM = Path(opscale.sim.__file__).parent


@pytest.mark.parametrize("name", CORE)
def test_core_imports_no_clock_randomness_or_io(name: str) -> None:
    tree = ast.parse((SIM / name).read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for module in names:
            assert module.split(".")[0] not in FORBIDDEN, f"{name} imports {module}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            # np.random.default_rng / np.random.seed: the generator must come from the caller.
            assert not (node.value.attr == "random" and node.attr in ("default_rng", "seed", "rand")), name


def test_traces_generate_only_from_a_passed_generator() -> None:
    text = (SIM / "traces.py").read_text()
    assert "default_rng" not in text and "import random" not in text
