"""`opscale agent`: the node agent (GPU discovery, one stream to placement, process supervision)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from clients.cli.common import ConfigOpt, echo, handle_errors, setting_flags, settings
from opscale.config import Settings
from opscale.errors import ConfigError

Opt = typer.Option


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {pair!r}: must be key=value, e.g. zone=us-east-1a or s0=rack-7")
        out[key] = value
    return out


async def _run_agent(cfg: Settings) -> None:
    from clients.agent.agent import Agent, AgentConfig
    from clients.agent.gpus import make_discovery
    from clients.agent.templates import load_templates
    from opscale.api.agent.v1 import agent_pb2 as apb
    from opscale.grpcutil.client import ClientSecurity
    from opscale.grpcutil.server import wait_for_signal
    from opscale.telemetry import build_telemetry

    node = cfg.node_name or socket.gethostname()
    templates = load_templates(cfg.agent_templates_file)
    discovery = make_discovery(cfg.fake_gpus, node)
    config = AgentConfig(
        node=node,
        placement_address=cfg.address_of("placement"),
        state_dir=cfg.agent_state_dir,
        templates=templates,
        labels=dict(cfg.node_labels),
        max_restarts=cfg.agent_max_restarts,
        restart_backoff_s=cfg.agent_restart_backoff_s,
        stop_grace_s=cfg.stop_grace_s,
        ingest_address=cfg.ingest_address,  # only when given explicitly: telemetry to ingest is opt-in
        security=ClientSecurity.of(cfg),
        env_allowlist=frozenset(cfg.agent_env_allowlist),
    )

    def registered(ack: apb.RegisterAck, adopted: int) -> None:
        gpus = agent.gpus
        kinds = ",".join(sorted({g.gpu_type for g in gpus}))
        echo(
            f"opscale agent ready: node {node}, {len(gpus)} GPUs ({kinds}), session {agent.session_id}, "
            f"placement {config.placement_address}, {adopted} replicas adopted, "
            f"registration {agent.registrations}"
        )

    # Built once for the process: its spans continue the traces of the commands placement sends.
    telemetry = build_telemetry("opscale-agent", otlp_endpoint=cfg.otlp_endpoint)
    agent = Agent(config, discovery, on_registered=registered, telemetry=telemetry)
    stopping = asyncio.Event()
    task = asyncio.create_task(agent.run(stopping))
    waiter = asyncio.create_task(wait_for_signal(stopping))
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        stopping.set()
        await task
        waiter.cancel()
    finally:
        telemetry.shutdown()  # flushes the spans still batched for the collector
    echo("opscale agent stopped (its replicas keep running; the next agent adopts them)")


# The README's settings an agent uses, as flags (the rest of its settings have flags of their own above).
AGENT_SETTINGS = (
    "agent_env_allowlist",
    "log_level",
    "log_format",
    "otlp_endpoint",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
    "token",
)


def register(app: typer.Typer) -> None:
    @app.command("agent")
    @handle_errors
    @setting_flags(*AGENT_SETTINGS)
    def agent_cmd(
        config: ConfigOpt = None,
        placement: Annotated[
            str | None, Opt("--placement", help="placement host:port [env: OPSCALE_PLACEMENT_ADDRESS]")
        ] = None,
        node_name: Annotated[
            str | None, Opt("--node-name", help="this node's identity (default: hostname)")
        ] = None,
        fake_gpus: Annotated[
            str | None, Opt("--fake-gpus", help="pretend GPUs instead of NVML, e.g. 8xH100")
        ] = None,
        templates: Annotated[
            Path | None, Opt("--templates", help="YAML launch templates this agent allows")
        ] = None,
        state_dir: Annotated[
            Path | None, Opt("--state-dir", help="where the agent remembers its pids")
        ] = None,
        label: Annotated[
            list[str] | None,
            Opt("--label", help="topology label key=value (zone, s2, s1, s0, nvlink_domain)"),
        ] = None,
        ingest: Annotated[
            str | None,
            Opt("--ingest", help="ingest host:port for GPU telemetry [env: OPSCALE_INGEST_ADDRESS]"),
        ] = None,
        max_restarts: Annotated[int | None, Opt("--max-restarts", help="crashes before failed")] = None,
        restart_backoff_s: Annotated[float | None, Opt("--restart-backoff-s")] = None,
        flags: dict[str, object] | None = None,
    ) -> None:
        """Run the node agent until SIGTERM/Ctrl-C: register with placement and run the replicas it places."""
        overrides: dict[str, object] = {
            "placement_address": placement,
            "ingest_address": ingest,
            "node_name": node_name,
            "fake_gpus": fake_gpus,
            "agent_templates_file": templates,
            "agent_state_dir": state_dir,
            "agent_max_restarts": max_restarts,
            "agent_restart_backoff_s": restart_backoff_s,
            **(flags or {}),
        }
        if label:
            overrides["node_labels"] = _labels(label)
        cfg = settings(config, **overrides)
        from opscale.telemetry import setup_logging

        setup_logging(cfg.log_level, cfg.log_format)
        logging.getLogger("clients.agent").setLevel(cfg.log_level.value.upper())
        asyncio.run(_run_agent(cfg))


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()
