"""Agents as real processes on one host (issue 14): two agents with different node names run side by
side, each in its own default state directory; a second agent on a directory in use exits with a
one-line error; `opscale agent cleanup` refuses while the agent lives and stops exactly its workers
once it is gone; `--keep-workers` leaves them for the next agent to adopt; and stopping `opscale up`
and the agents leaves no worker process behind.

The control plane is `opscale up` on its embedded default (SQLite, in-process counters) in a
temporary working directory, as in the README walkthrough; every wait polls with a deadline, and
every process (workers included, found by their OPSCALE_NODE environment) is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_agents_processes import workers_of

ENV = {
    "OPSCALE_INGEST_PORT": "0",
    "OPSCALE_DECISION_PORT": "0",
    "OPSCALE_PLACEMENT_PORT": "0",
    "OPSCALE_KEDA_PORT": "0",
    "OPSCALE_METRICS_PORT": "0",
    "OPSCALE_HEARTBEAT_INTERVAL_S": "0.5",
    "OPSCALE_LOST_TIMEOUT_S": "60",  # agents restart here on purpose: no node may be judged lost
    "OPSCALE_RECONCILE_INTERVAL_S": "0.5",
    "OPSCALE_STOP_GRACE_S": "2",
    "PYTHONUNBUFFERED": "1",
}
SPEC = """name: side-by-side
model: {preset: llama3-8b}
mode: colocated
policy: static
slo: {ttft_ms: 2000, tbt_ms: 100}
params: {pools: [{pool: {stage: serving, operator: model}, replicas: 4}]}
"""


class Host:
    """Processes started in one working directory, each logging to its own file."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {**os.environ, **ENV, "OPSCALE_DATABASE_URL": f"sqlite:///{cwd}/opscale.db"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes: set[str] = set()

    def spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        with (self.cwd / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
            )
        self.procs[name] = proc
        return proc

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *argv],
            capture_output=True,
            text=True,
            timeout=90,
            env=self.env,
            cwd=self.cwd,
        )

    def log(self, name: str) -> str:
        path = self.cwd / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, pattern: str, after: int = 0, timeout_s: float = 90) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log(name)[after:])
            if match:
                return match
            time.sleep(0.1)
        raise AssertionError(f"{name}: no line matching {pattern!r}:\n{self.log(name)[-3000:]}")

    def agent(self, node: str, placement: int, *extra: str) -> subprocess.Popen[bytes]:
        self.nodes.add(node)
        return self.spawn(
            node,
            "opscale.agent",
            "--node-name",
            node,
            "--fake-gpus",
            "3xH100",
            "--placement",
            f"127.0.0.1:{placement}",
            "--restart-backoff-s",
            "0.2",
            *extra,
        )

    def workers(self, node: str) -> set[int]:
        return {pid for pid, env in workers_of(self.nodes).items() if env["OPSCALE_NODE"] == node}

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        for pid in workers_of(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def until(what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    running = Host(tmp_path)
    try:
        yield running
    finally:
        running.close()


def test_agents_on_one_host_own_their_state_and_their_workers(host: Host) -> None:
    host.spawn("up", "opscale.cli.main", "up")
    ready = host.wait_log("up", r"opscale ready: .*")
    ports = {m[0]: int(m[1]) for m in re.findall(r"(\w+) on [\d.]+:(\d+)", ready.group(0))}
    (host.cwd / "spec.yaml").write_text(SPEC)
    applied = host.run(
        "opscale.cli.main", "apply", "-f", "spec.yaml", "--decision", f"127.0.0.1:{ports['decision']}"
    )
    assert applied.returncode == 0, applied.stderr

    # Two agents, two node names, no --state-dir: side by side, each in .opscale/agent/<node>.
    suffix = uuid.uuid4().hex[:6]
    a1, a2 = f"a1-{suffix}", f"a2-{suffix}"
    for node in (a1, a2):
        host.agent(node, ports["placement"])
    for node in (a1, a2):
        host.wait_log(node, r"opscale agent ready: ")
        assert (host.cwd / ".opscale" / "agent" / node / "agent.lock").exists()
    until("4 workers over both agents", lambda: len(host.workers(a1)) + len(host.workers(a2)) == 4)
    on_a1 = host.workers(a1)
    assert on_a1 and host.workers(a2)

    # A second agent on a1's directory: one clear line and a non-zero exit, nothing adopted or stopped.
    intruder = host.run(
        "opscale.agent",
        "--node-name",
        "intruder",
        "--fake-gpus",
        "1xH100",
        "--placement",
        f"127.0.0.1:{ports['placement']}",
        "--state-dir",
        f".opscale/agent/{a1}",
    )
    assert intruder.returncode == 5, intruder.stderr
    lines = intruder.stderr.strip().splitlines()
    holder = f"the agent of node {a1} (pid {host.procs[a1].pid})"
    assert len(lines) == 1
    assert lines[0].startswith(f"error: state directory .opscale/agent/{a1} is in use by {holder}")
    # Cleanup refuses while a1 lives.
    refused = host.run("opscale.cli.main", "agent", "cleanup", "--node-name", a1)
    assert refused.returncode == 5 and f"in use by the agent of node {a1}" in refused.stderr
    assert host.workers(a1) == on_a1

    # kill -9: the workers outlive the agent; a new agent with --keep-workers adopts them, and on a
    # clean stop leaves them running for the next one.
    host.procs[a1].kill()
    host.procs[a1].wait(timeout=30)
    assert host.workers(a1) == on_a1
    before = len(host.log(a1))
    host.agent(a1, ports["placement"], "--keep-workers")
    adopted = host.wait_log(a1, r"(\d+) replicas adopted", after=before)
    assert int(adopted.group(1)) == len(on_a1)
    host.procs[a1].send_signal(signal.SIGTERM)
    assert host.procs[a1].wait(timeout=30) == 0
    assert "--keep-workers: its replicas keep running" in host.log(a1)
    assert host.workers(a1) == on_a1
    # The agent is gone for good: cleanup stops exactly its workers.
    cleaned = host.run("opscale.cli.main", "agent", "cleanup", "--node-name", a1)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"stopped {len(on_a1)} worker processes" in cleaned.stdout
    assert host.workers(a1) == set()

    # Stopping `opscale up`, then the last agent: no worker process is left.
    host.procs["up"].send_signal(signal.SIGTERM)
    assert host.procs["up"].wait(timeout=60) == 0
    assert host.workers(a2)  # the agent still owns them while it runs
    host.procs[a2].send_signal(signal.SIGTERM)
    assert host.procs[a2].wait(timeout=60) == 0
    assert "opscale agent stopped, and its replicas with it" in host.log(a2)
    assert workers_of(host.nodes) == {}
    assert "Traceback" not in host.log(a1) + host.log(a2)
