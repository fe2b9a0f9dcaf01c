"""Where the CLI connects (flag > env > named context > localhost defaults), and what every command does
when the service is down or silent: exit 6 and one line naming the service and address, no traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opscale.services.runtime import Runtime
from tests.component.cli_kit import OPERATOR_SPEC, Cli
from tests.component.decision_kit import start_replica

EMBEDDED = pytest.mark.parametrize("runtime", ["embedded"], indirect=True)


@EMBEDDED
async def test_named_contexts_choose_the_service(runtime: Runtime, tmp_path: Path) -> None:
    replica = await start_replica(runtime, "r1")
    address = f"127.0.0.1:{replica.running.port}"
    # No address in the environment: only the config file can lead the CLI to the service.
    cli = Cli(tmp_path, extra_env={"OPSCALE_DECISION_ADDRESS": "", "OPSCALE_PLACEMENT_ADDRESS": ""})
    try:
        assert "localhost defaults" in await cli.ok("config", "get-contexts")
        await cli.fails(3, "config", "current-context")
        await cli.ok("config", "set-context", "prod", "--decision", address)
        await cli.ok("config", "set-context", "dr", "--decision", "127.0.0.1:1", "--placement", "127.0.0.1:2")
        assert (await cli.ok("config", "current-context")).strip() == "prod"  # the first one becomes current
        saved = yaml.safe_load(cli.config_path.read_text())
        assert saved["current-context"] == "prod" and saved["contexts"]["dr"]["placement"] == "127.0.0.1:2"

        await cli.ok("apply", "-f", cli.write("chat.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=2000)))
        assert [d["spec"]["name"] for d in await cli.json("get", "deployments")] == ["chat"]
        table = (await cli.ok("config", "get-contexts")).splitlines()
        assert table[0].split() == ["CURRENT", "NAME", "DECISION", "PLACEMENT", "INGEST"]
        assert table[2].split() == ["*", "prod", address, "127.0.0.1:50063", "127.0.0.1:50061"]
        listed = await cli.json("config", "get-contexts")
        assert listed["current-context"] == "prod" and set(listed["contexts"]) == {"dr", "prod"}

        # --context picks another for one command; use-context switches; a flag beats both.
        assert "127.0.0.1:1" in await cli.fails(6, "get", "deployments", "--context", "dr")
        assert "switched" in await cli.ok("config", "use-context", "dr")
        assert "127.0.0.1:1" in await cli.fails(6, "get", "deployments")
        assert "chat" in await cli.ok("get", "deployments", "--decision", address)
        assert "chat" in (await cli("get", "deployments", env={"OPSCALE_DECISION_ADDRESS": address})).stdout
        assert "known: dr, prod" in await cli.fails(2, "config", "use-context", "staging")
        assert "no context 'staging'" in await cli.fails(2, "get", "deployments", "--context", "staging")

        cli.config_path.write_text("contexts: {prod: {decsion: 'x:1'}}\n")
        assert "unknown key 'decsion'" in await cli.fails(2, "get", "deployments")
        cli.config_path.write_text("contexts: [unclosed\n")
        assert "cannot read" in await cli.fails(2, "get", "deployments")
    finally:
        await replica.stop()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung service)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


DECISION_COMMANDS = [
    ["get", "deployments"],
    ["get", "decisions", "chat"],
    ["describe", "deployment", "chat"],
    ["delete", "chat"],
    ["freeze", "chat"],
    ["unfreeze", "chat"],
    ["explain", "chat"],
    ["what-if", "chat", "--rps", "1", "--input-tokens", "10", "--output-tokens", "10"],
    ["top", "-n", "1"],
]
PLACEMENT_COMMANDS = [
    ["get", "nodes"],
    ["get", "gpus"],
    ["get", "replicas", "chat"],
    ["describe", "node", "gpu-a"],
    ["cordon", "gpu-a"],
    ["uncordon", "gpu-a"],
    ["drain", "gpu-a"],
]


async def test_every_command_names_the_unreachable_service(tmp_path: Path, closed_port: int) -> None:
    down = f"127.0.0.1:{closed_port}"
    cli = Cli(tmp_path, decision=down, placement=down)
    spec = cli.write("chat.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=2000))
    for args, service in [
        *((c, "decision") for c in DECISION_COMMANDS),
        *((c, "placement") for c in PLACEMENT_COMMANDS),
        (["apply", "-f", spec], "decision"),
    ]:
        for fmt in ("table", "json"):
            line = await cli.fails(6, *args, "-o", fmt)
            assert line.startswith(f"error: cannot reach {service} at {down} ("), (args, line)


async def test_a_silent_service_hits_the_deadline(tmp_path: Path, silent_port: int) -> None:
    hung = f"127.0.0.1:{silent_port}"
    cli = Cli(tmp_path, decision=hung, placement=hung)
    line = await cli.fails(6, "get", "deployments", "--timeout", "0.5")
    assert line == f"error: decision at {hung} did not answer within 0.5s"
    assert await cli.fails(6, "get", "nodes", "--timeout", "0.5") == (
        f"error: placement at {hung} did not answer within 0.5s"
    )
