"""Real `opscale` processes: `up` serves all three services and stops cleanly on Ctrl-C; a service
refuses an old schema; `db upgrade` creates it; a bad setting stops start-up naming the setting."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opscale.db.migrate import current_revision, head_revision

READY = re.compile(r"opscale ready: (.*?)(?:; metrics on (\S+))?$")


def opscale(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscale.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "opscale.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def wait_ready(proc: subprocess.Popen[str], timeout_s: float = 60) -> dict[str, int]:
    """Read stdout until the ready line; returns {service: port}."""
    assert proc.stdout is not None
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    lines = []
    while sel.select(timeout=timeout_s):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = READY.search(line.strip())
        if match:
            return {m[0]: int(m[1]) for m in re.findall(r"(\w+) on [\d.]+:(\d+)", match.group(1))}
    proc.kill()
    raise AssertionError(
        f"no ready line; stdout={lines!r} stderr={proc.stderr.read() if proc.stderr else ''}"
    )


async def serving(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


PORTS_ANY = {
    "OPSCALE_INGEST_PORT": "0",
    "OPSCALE_DECISION_PORT": "0",
    "OPSCALE_PLACEMENT_PORT": "0",
    "OPSCALE_KEDA_PORT": "0",
    "OPSCALE_METRICS_PORT": "0",
}


def test_up_on_embedded_default_serves_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**PORTS_ANY, "OPSCALE_DATABASE_URL": f"sqlite:///{tmp_path}/state/opscale.db"}
    proc = spawn("up", env=env)
    try:
        ports = wait_ready(proc)
        assert set(ports) == {"ingest", "decision", "placement", "keda"}
        for port in ports.values():
            assert asyncio.run(serving(port)) == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "opscale stopped cleanly" in out
    assert "Traceback" not in err
    assert current_revision(f"sqlite:///{tmp_path}/state/opscale.db") == head_revision()


def test_serve_on_postgres_refuses_old_schema_until_upgraded(pg_url: str) -> None:
    env = {**PORTS_ANY, "OPSCALE_DATABASE_URL": pg_url}
    refused = opscale("serve", "decision", env=env)
    assert refused.returncode == 5, refused.stderr
    assert "opscale db upgrade" in refused.stderr and "Traceback" not in refused.stderr

    upgraded = opscale("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"-> {head_revision()}" in upgraded.stdout
    assert opscale("db", "current", env=env).stdout.strip().endswith("(up to date)")

    proc = spawn("serve", "decision", env=env)
    try:
        ports = wait_ready(proc)
        assert asyncio.run(serving(ports["decision"])) == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err

    assert opscale("db", "downgrade", "base", env=env).returncode == 0
    refused = opscale("serve", "placement", env=env)
    assert refused.returncode == 5 and "opscale db upgrade" in refused.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"OPSCALE_DECISION_PORT": "not-a-port"}, "OPSCALE_DECISION_PORT='not-a-port'"),
        ({"OPSCALE_LOG_LEVEL": "chatty"}, "allowed: debug, info, warning or error"),
        ({"OPSCALE_COUNTERS_URL": "memcache://x"}, "OPSCALE_COUNTERS_URL"),
    ],
)
def test_bad_setting_stops_start_up(env: dict[str, str], needle: str) -> None:
    result = opscale("serve", "decision", env=env)
    assert result.returncode == 2
    assert needle in result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**PORTS_ANY, "OPSCALE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
        assert opscale("db", "upgrade", env=env).returncode == 0
        result = opscale("serve", "decision", "--port", str(port), env=env)
    assert result.returncode == 2, result.stderr
    assert f"127.0.0.1:{port} (decision_port)" in result.stderr


def test_unreachable_postgres_is_unavailable() -> None:
    result = opscale("db", "upgrade", env={"OPSCALE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 6, result.stderr
    assert "127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_busy_ports_and_bad_flags_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """A second `opscale up` (a port in use, gRPC or metrics) or a bad flag value stops start-up with one
    line naming the setting, never a traceback."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = str(held.getsockname()[1])
        env = {
            **PORTS_ANY,
            "OPSCALE_DATABASE_URL": f"sqlite:///{tmp_path}/opscale.db",
            "OPSCALE_LOG_LEVEL": "warning",
        }
        for flag, setting in (
            ("--metrics-port", "metrics_port"),
            ("--ingest-port", "ingest_port"),
            ("--keda-port", "keda_port"),
        ):
            run = opscale("up", flag, busy, env=env)
            assert run.returncode == 2, run.stderr
            assert run.stderr.count("\n") == 1, run.stderr
            assert f"127.0.0.1:{busy} ({setting}): Address already in use" in run.stderr
        bad = opscale("up", "--whatif-workers", "99", env=env)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "WHATIF_WORKERS" in bad.stderr, (
            bad.stderr
        )
