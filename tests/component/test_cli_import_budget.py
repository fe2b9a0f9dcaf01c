"""What the everyday CLI commands import: ``opscale --help``, ``version``, ``get`` and ``describe`` run
in a fresh interpreter under ``python -X importtime`` (against a real decision service, so the whole
command runs, table and spec included), and none of them may import the database layer, the services,
numpy, the plotting library, the simulator or the telemetry SDK: those cost seconds of CPU that a
``get`` never uses. A budget on modules, not on time (timings vary with the machine); the cumulative
import time is printed for the record."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from opscale.services.runtime import Runtime
from tests.component.cli_kit import OPERATOR_SPEC, Cli
from tests.component.decision_kit import start_replica

# Module prefixes a light command must not import (each is a top-level import chain of seconds' CPU).
FORBIDDEN = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "redis",
    "opscale.services",
    "numpy",
    "matplotlib",
    "pydantic_settings",
    "prometheus_client",
    "opentelemetry.sdk",
    "opscale.db.engine",
    "opscale.db.repo",  # (opscale.db.status, the lifecycle enums, is pure and allowed)
    "opscale.sim",
    "opscale.policy",
    "opscale.model",
    "opscale.config",
    "opscale.telemetry",
)


def imported(stderr: str) -> dict[str, int]:
    """{module: cumulative µs} from ``-X importtime`` output (its lines: 'import time: self | cumulative |
    name', the name indented by depth)."""
    out = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        out[name.strip()] = int(cumulative)
    return out


def top_level_us(stderr: str) -> int:
    """The summed cumulative time of the modules imported at depth 0 (the whole import cost)."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            parts = line.split("|")
            if not parts[2].startswith("  "):  # depth 0: the name follows one space
                total += int(parts[1])
    return total


# What the `opscale` console script runs.
ENTRY = "import sys; from opscale.cli.main import main; sys.argv[0] = 'opscale'; main()"


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-c", ENTRY, *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OPSCALE_CLI_CONFIG": "/nonexistent/opscale-cli.yaml"},
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
async def test_everyday_commands_import_no_heavy_layer(runtime: Runtime, tmp_path: Path) -> None:
    replica = await start_replica(runtime, "r1")
    address = f"127.0.0.1:{replica.running.port}"
    cli = Cli(tmp_path, decision=address, placement="127.0.0.1:1")
    try:
        await cli.ok("apply", "-f", cli.write("chat.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=2000)))
        commands = {
            "--help": ("--help",),
            "version": ("version",),
            "get": ("get", "deployments", "--decision", address),
            "describe": (
                "describe",
                "deployment",
                "chat",
                "--decision",
                address,
                "--placement",
                "127.0.0.1:1",
            ),
        }
        for name, args in commands.items():
            code, err = await run(*args)
            assert code == 0, err[-2000:]
            modules = imported(err)
            assert "opscale.cli.main" in modules, name
            heavy = sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in FORBIDDEN))
            assert not heavy, f"opscale {name} imports {heavy[:10]}"
            print(f"opscale {name}: {top_level_us(err) / 1e6:.3f} s of imports, {len(modules)} modules")
    finally:
        await replica.stop()
