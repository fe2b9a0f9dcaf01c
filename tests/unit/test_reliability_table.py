"""scripts/reliability_table.py: prints what was measured, says so when something never recovered or
did not add up, and replaces only the marked block of RELIABILITY.md."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reliability_table", ROOT / "scripts" / "reliability_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scenario(**changes: Any) -> dict[str, Any]:
    base = {"fault": "kill -9 of placement", "expected": "nothing stops", "recovery_s": 7.25,
            "healthy_replicas_restarted": 0, "replicas": 4, "max_extra_processes": 0,
            "samples_sent": 1000, "samples_stored": 1000, "tracebacks": {}}  # fmt: skip
    return {**base, **changes}


def _doc(**scenarios: dict[str, Any]) -> dict[str, Any]:
    return {"date": "2026-12-03 23:53 UTC", "machine": "vm, 2 CPUs", "suite_wall_s": 144.0,
            "settings": {"lost_timeout_s": 10}, "scenarios": scenarios}  # fmt: skip


def test_rows_say_what_was_measured_and_what_never_came() -> None:
    table = _script().table
    good = table(_doc(**{"placement kill -9": _scenario()}))
    assert "Measured 2026-12-03 23:53 UTC on vm, 2 CPUs; suite wall time 144 s" in good
    assert "| 7.2 s | none: 1,000 sent = 1,000 stored |" in good
    bad = table(_doc(**{"placement kill -9": _scenario(
        recovery_s=None, healthy_replicas_restarted=4, samples_stored=998, takeover_s=None,
        tracebacks={"decision-a": 3, "placement": 1})}))  # fmt: skip
    assert "did not recover within the bound" in bad
    assert "1,000 sent, 998 stored (-2)" in bad
    assert "4 of 4 healthy replicas restarted" in bad and "4 tracebacks logged" in bad
    assert "standby decided after never (within the bound)" in bad


def test_write_replaces_only_the_marked_block(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_doc(**{"placement kill -9": _scenario()})))
    run = [sys.executable, str(ROOT / "scripts" / "reliability_table.py"), "--results", str(results)]
    printed = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert printed.count("| kill -9 of placement |") == 1
    doc = tmp_path / "RELIABILITY.md"
    doc.write_text("# head\n<!-- chaos-table:begin -->\nold table\n<!-- chaos-table:end -->\n## tail\n")
    subprocess.run([*run, "--write", "--doc", str(doc)], check=True)
    assert (
        doc.read_text() == f"# head\n<!-- chaos-table:begin -->\n{printed}<!-- chaos-table:end -->\n## tail\n"
    )
    doc.write_text("no markers")
    unmarked = subprocess.run([*run, "--write", "--doc", str(doc)], capture_output=True, text=True)
    assert (
        unmarked.returncode == 2 and "block to replace" in unmarked.stderr and doc.read_text() == "no markers"
    )
    missing = subprocess.run(
        [*run[:2], "--results", str(tmp_path / "none.json")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "run pytest tests/chaos first" in missing.stderr
