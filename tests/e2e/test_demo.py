"""`opscale demo` as a user runs it: a subprocess, 20 s of replay without the live view.

Checks the exit status, the report and its four plots, the simulated operator-vs-model comparison (also
at equal attainment), that the timeline saw decisions arrive over WatchDecisions and nonzero load, and
that no worker process the demo's agent started is left behind (the demo kills leftovers itself and
exits non-zero when it had to; this checks /proc independently).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opscale.demo.stack import worker_pids

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_to_the_end_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--duration-s", "20", "--no-live", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "opscale.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "report.md").is_file()
    for name in ("load.png", "replicas.png", "gpus.png", "latency.png"):
        assert (out / name).stat().st_size > 10_000, name
    timeline = json.loads((out / "timeline.json").read_text())
    rows = timeline["seconds"]
    assert len(rows) == 20
    assert sum(r["arrivals"] for r in rows) > 0
    assert timeline["decisions"] and rows[-1]["decisions"] > 0
    assert any(sum(r["running"].values()) > 0 for r in rows), "no worker became ready"
    # Both policies on the same load through evaluate's code, in the timeline and the report.
    sim = timeline["simulated"]
    assert sim is not None, timeline["notes"]
    assert {sim[p]["metrics"]["policy"] for p in ("operator", "model")} == {"operator", "model"}
    assert all(len(sim[p]["gpus"]) >= 20 for p in ("operator", "model"))
    assert sorted(r["headroom"] for r in sim["model_sweep"]) == [0.25, 0.5, 1.0]  # evaluate's sweep
    report = (out / "report.md").read_text()
    assert "## Operator vs model on the same load" in report and "On the same load operator-level" in report
    assert "at equal attainment" in report
    assert timeline["meta"]["leftover_workers"] == 0
    assert not worker_pids({timeline["meta"]["node"]})
