"""Driving the `opscale` CLI in-process against services on the test's event loop.

The CLI uses sync gRPC channels, so each invocation runs in a worker thread (``asyncio.to_thread``)
while the loop keeps serving. The environment points the CLI at the services and at a config file
under the test's tmp_path, so nothing on the host (``~/.config/opscale``) leaks in.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner, Result

from opscale.cli.main import app

PD_SPEC = """\
name: {name}
model: {{preset: llama3-8b}}
policy: pd
mode: disaggregated
slo: {{ttft_ms: 1000, tbt_ms: 100}}
interval_s: 1
stabilization:
  {{scale_up_cooldown_s: 0, scale_down_cooldown_s: 0, scale_down_window_s: 0, max_staleness_s: 10}}
pd_params: {{target_decode_tokens_per_s_per_instance: 1000, prefill_per_decode: 0.5}}
"""

OPERATOR_SPEC = """\
name: {name}
model: {{preset: llama3-70b}}
gpu_type: H100
mode: disaggregated
policy: operator
slo: {{ttft_ms: {ttft_ms}, tbt_ms: 100, percentile: 99}}
limits:
  - {{max_replicas: 32}}
"""


@dataclass
class Cli:
    tmp_path: Path
    decision: str = "127.0.0.1:1"
    placement: str = "127.0.0.1:1"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.tmp_path / "opscale-cli.yaml"

    def env(self) -> dict[str, str]:
        return {
            "OPSCALE_CLI_CONFIG": str(self.config_path),
            "OPSCALE_DECISION_ADDRESS": self.decision,
            "OPSCALE_PLACEMENT_ADDRESS": self.placement,
            "COLUMNS": "200",
            **self.extra_env,
        }

    async def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, app, list(args), env={**self.env(), **(env or {})})

    async def ok(self, *args: str) -> str:
        result = await self(*args)
        assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok(*args, "-o", "json"))

    async def yaml(self, *args: str) -> Any:
        return yaml.safe_load(await self.ok(*args, "-o", "yaml"))

    async def fails(self, code: int, *args: str) -> str:
        """Run a command that must fail with ``code``; returns its one-line stderr."""
        result = await self(*args)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr + result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]

    def write(self, name: str, text: str) -> str:
        path = self.tmp_path / name
        path.write_text(text)
        return str(path)
