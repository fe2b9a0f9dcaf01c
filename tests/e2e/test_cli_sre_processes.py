"""The real `opscale` binary against real `opscale up` processes: an SRE session end to end, and the
service going away underneath it (exit 6 and one line naming the service, never a traceback)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import yaml

from tests.e2e.test_cli_processes import PORTS_ANY, opscale, spawn, wait_ready

SPEC = """\
name: chat
model: {preset: llama3-70b}
gpu_type: H100
mode: disaggregated
policy: operator
slo: {ttft_ms: 2000, tbt_ms: 100, percentile: 99}
limits:
  - {max_replicas: 32}
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, starts: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(starts), result.stderr


def test_service_down_is_exit_6_and_one_line(tmp_path: Path) -> None:
    port = _closed_port()
    env = {"OPSCALE_CLI_CONFIG": str(tmp_path / "none.yaml")}
    result = opscale("get", "deployments", "--decision", f"127.0.0.1:{port}", "--timeout", "3", env=env)
    _assert_one_line_error(result, 6, f"error: cannot reach decision at 127.0.0.1:{port} (")
    result = opscale("drain", "gpu-a", env={**env, "OPSCALE_PLACEMENT_ADDRESS": f"127.0.0.1:{port}"})
    _assert_one_line_error(result, 6, f"error: cannot reach placement at 127.0.0.1:{port} (")


def test_sre_session_against_opscale_up(tmp_path: Path) -> None:
    up = spawn("up", env={**PORTS_ANY, "OPSCALE_DATABASE_URL": f"sqlite:///{tmp_path}/opscale.db"})
    try:
        ports = wait_ready(up)
        config = tmp_path / "cli.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "current-context": "local",
                    "contexts": {
                        "local": {
                            "decision": f"127.0.0.1:{ports['decision']}",
                            "placement": f"127.0.0.1:{ports['placement']}",
                            "ingest": f"127.0.0.1:{ports['ingest']}",
                        }
                    },
                }
            )
        )
        env = {"OPSCALE_CLI_CONFIG": str(config)}
        spec = tmp_path / "chat.yaml"
        spec.write_text(SPEC)

        applied = opscale("apply", "-f", str(spec), env=env)
        assert applied.returncode == 0 and applied.stdout.strip() == "deployment/chat created (version 1)"
        listed = json.loads(opscale("get", "deployments", "-o", "json", env=env).stdout)
        assert [d["spec"]["name"] for d in listed] == ["chat"]
        assert "chat" in opscale("get", "deployments", env=env).stdout
        load = ["--rps", "10", "--input-tokens", "512", "--output-tokens", "256"]
        what_if = yaml.safe_load(
            opscale("what-if", "chat", *load, "-p", "operator", "-o", "yaml", env=env).stdout
        )
        assert what_if["plans"][0]["policy_name"] == "operator" and what_if["plans"][0]["pools"]
        assert json.loads(opscale("get", "nodes", "-o", "json", env=env).stdout) == []
        _assert_one_line_error(opscale("cordon", "gpu-a", env=env), 3, "error: node 'gpu-a' not found")

        bad = tmp_path / "bad.yaml"
        bad.write_text(SPEC.replace("ttft_ms: 2000", "ttft_ms: -5"))
        _assert_one_line_error(
            opscale("apply", "-f", str(bad), env=env), 2, f"error: {bad}: spec.slo.ttft_ms"
        )
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=30)
    # The same session after the services stopped: exit 6, one line, the address from the context.
    gone = opscale("get", "deployments", "--timeout", "3", env=env)
    _assert_one_line_error(gone, 6, f"error: cannot reach decision at 127.0.0.1:{ports['decision']} (")
