"""The README quick start, scripted with real processes on the embedded default (SQLite + in-process
counters): ``opscale up``, an agent with 8 fake H100s, ``apply`` of the README's deployment,
``opscale load``, then ``describe``/``top``/``get decisions`` — the deployment scales from nothing to a
plan that placement places whole (every decided replica on a GPU and ready), and the views say so.

Only the ports differ from the README (0: any free, so tests never collide); every process runs in a
fresh directory, so the embedded database is the README's ``.opscale/opscale.db`` there. Every process
this test started, and the workers the agent started, are killed at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_agents_processes import AGENT_READY, read_line, workers_of
from tests.e2e.test_cli_processes import PORTS_ANY, wait_ready

README = Path(__file__).resolve().parents[2] / "README.md"
NODE = "gpu-quickstart"


def readme_spec() -> str:
    """The deployment the README's quick start applies (the first ``apply -f -`` heredoc)."""
    text = README.read_text()
    start = text.index("opscale apply -f - <<'YAML'\n") + len("opscale apply -f - <<'YAML'\n")
    return text[start : text.index("YAML\n", start)]


def opscale(
    cwd: Path, *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscale.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "OPSCALE_CLI_CONFIG": str(cwd / "cli.yaml")},
    )


def placed_whole(described: dict[str, Any]) -> bool:
    """Every pool of the current decision has as many running replicas on a GPU, and ready, as decided,
    and the decision asks for at least one GPU."""
    decision = described.get("decision")
    if not decision or not any(int(p.get("replicas", 0)) for p in decision["pools"]):
        return False
    for plan in decision["pools"]:
        mine = [
            r
            for r in described["replicas"]
            if r["pool"] == plan["pool"]
            and r["desired_state"] == "REPLICA_DESIRED_STATE_RUNNING"
            and r["node"]
            and r["observed_state"] == "REPLICA_OBSERVED_STATE_READY"
        ]
        if len(mine) != int(plan.get("replicas", 0)):
            return False
    return True


@pytest.mark.slow
def test_readme_quick_start_scales_under_load_with_every_replica_placed(tmp_path: Path) -> None:
    env = {**os.environ, **PORTS_ANY}
    procs: list[subprocess.Popen[str]] = []
    try:
        up = subprocess.Popen(
            [sys.executable, "-m", "opscale.cli.main", "up"],
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "up.log").open("w"),
            text=True,
            env=env,
            cwd=tmp_path,
        )
        procs.append(up)
        ports = wait_ready(up)
        addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        flags = ["--decision", addr["decision"], "--placement", addr["placement"]]
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opscale.cli.main",
                "agent",
                "--fake-gpus",
                "8xH100",
                "--node-name",
                NODE,
                "--placement",
                addr["placement"],
            ],
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "agent.log").open("w"),
            text=True,
            env=env,
            cwd=tmp_path,
        )
        procs.append(agent)
        read_line(agent, AGENT_READY, timeout_s=60)

        applied = opscale(tmp_path, "apply", "-f", "-", "--decision", addr["decision"], stdin=readme_spec())
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == "deployment/chat created (version 1)"

        # Bad input to load is one line and an exit code, before any load is sent.
        unknown = opscale(tmp_path, "load", "-d", "nobody", "--rps", "5", "--duration", "1", *flags[:2])
        assert unknown.returncode == 3 and unknown.stderr.count("\n") == 1, unknown.stderr
        assert "nobody" in unknown.stderr
        bad = tmp_path / "bad.csv"
        bad.write_text("arrival_s,input_tokens\nsoon,12\n")
        refused = opscale(tmp_path, "load", "-d", "chat", "--trace", str(bad), *flags[:2])
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert str(bad) in refused.stderr

        loaded = opscale(
            tmp_path,
            "load", "-d", "chat", "--rps", "10", "--duration", "25",
            "--ingest", addr["ingest"], "--decision", addr["decision"],
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
        assert "load done: chat: 25/25 s" in loaded.stdout
        assert "requests sent" in loaded.stderr  # the progress line (every 10 s when piped)

        deadline = time.monotonic() + 90
        described: dict[str, Any] = {}
        while time.monotonic() < deadline:
            out = opscale(tmp_path, "describe", "deployment", "chat", "-o", "json", *flags)
            assert out.returncode == 0, out.stderr
            described = json.loads(out.stdout)
            if placed_whole(described):
                break
            time.sleep(1)
        assert placed_whole(described), json.dumps(described)[:3000]

        table = opscale(tmp_path, "describe", "deployment", "chat", *flags).stdout
        placed = next(line for line in table.splitlines() if line.startswith("Placed:"))
        assert " placed, " in placed and "unknown" not in placed
        top = opscale(tmp_path, "top", "-n", "1", *flags[:2])
        assert top.returncode == 0 and "chat" in top.stdout and "placement partial" not in top.stdout
        decisions = json.loads(
            opscale(tmp_path, "get", "decisions", "chat", "--limit", "1000", "-o", "json", *flags[:2]).stdout
        )
        # The first decisions (before load) asked for no GPU; the newest asks for some: it scaled.
        assert not any(int(p.get("replicas", 0)) for p in decisions[-1]["pools"])
        assert any(int(p.get("replicas", 0)) for p in decisions[0]["pools"])
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in workers_of({NODE}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
