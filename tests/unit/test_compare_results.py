"""scripts/compare_results.py: finds a moved number anywhere, ignores wall times and the command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_results", ROOT / "scripts" / "compare_results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_real_differences_count() -> None:
    diff = _script().differences
    a = {"command": "x", "runs": [{"metrics": {"wall_s": 1.0, "gpu_hours": 2.5}, "policy": "pd"}]}
    same = {"command": "y", "runs": [{"metrics": {"wall_s": 9.0, "gpu_hours": 2.5}, "policy": "pd"}]}
    moved = {"command": "x", "runs": [{"metrics": {"wall_s": 1.0, "gpu_hours": 2.6}, "policy": "pd"}]}
    assert list(diff(a, same)) == []
    assert list(diff(a, moved)) == ["/runs[0]/metrics/gpu_hours: 2.5 != 2.6"]
    assert list(diff(a, {**a, "runs": []}))  # a lost run is a difference
