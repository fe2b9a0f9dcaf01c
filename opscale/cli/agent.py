"""`opscale agent`: the node agent (GPU discovery, one stream to placement, process supervision), and
`opscale agent cleanup` for the workers of an agent that is gone."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from opscale.cli.common import ConfigOpt, echo, handle_errors, setting_flags, settings
from opscale.config import Settings
from opscale.errors import ConfigError

Opt = typer.Option
DEFAULT_STATE_ROOT = Path(".opscale/agent")


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {pair!r}: must be key=value, e.g. zone=us-east-1a or s0=rack-7")
        out[key] = value
    return out


def state_dir_of(cfg: Settings, node: str) -> Path:
    """The state directory: as configured, else one per node name, so that agents of different nodes on
    one host never adopt each other's workers (they shared `.opscale/agent` before issue 14)."""
    if cfg.agent_state_dir is not None:
        return cfg.agent_state_dir
    if not node or node in (".", "..") or "/" in node or "\0" in node:
        raise ConfigError(f"node name {node!r} cannot name a state directory; give --state-dir")
    return DEFAULT_STATE_ROOT / node


async def _run_agent(cfg: Settings, keep_workers: bool) -> None:
    from opscale.agent.agent import Agent, AgentConfig
    from opscale.agent.backoff import Backoff
    from opscale.agent.gpus import make_discovery
    from opscale.agent.templates import load_templates
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
        state_dir=state_dir_of(cfg, node),
        templates=templates,
        labels=dict(cfg.node_labels),
        max_restarts=cfg.agent_max_restarts,
        restart_backoff_s=cfg.agent_restart_backoff_s,
        stop_grace_s=cfg.stop_grace_s,
        ingest_address=cfg.ingest_address,  # only when given explicitly: telemetry to ingest is opt-in
        security=ClientSecurity.of(cfg),
        env_allowlist=frozenset(cfg.agent_env_allowlist),
        keep_workers=keep_workers,
    )

    def registered(ack: apb.RegisterAck, adopted: int) -> None:
        gpus = agent.gpus
        kinds = ",".join(sorted({g.gpu_type for g in gpus}))
        echo(
            f"opscale agent ready: node {node}, {len(gpus)} GPUs ({kinds}), session {agent.session_id}, "
            f"placement {agent.placement_address}, {adopted} replicas adopted, "
            f"registration {agent.registrations}"
        )

    # Built once for the process: its spans continue the traces of the commands placement sends.
    telemetry = build_telemetry("opscale-agent", otlp_endpoint=cfg.otlp_endpoint)
    backoff = Backoff(max_s=cfg.agent_reconnect_max_s)  # placement's recovery grace counts on this cap
    agent = Agent(config, discovery, backoff=backoff, on_registered=registered, telemetry=telemetry)
    if cfg.agent_metrics_port is not None:
        from opscale.agent.metrics import AgentCollector

        telemetry.registry.register(AgentCollector(agent))
        try:
            bound = telemetry.serve_metrics(cfg.listen_host, cfg.agent_metrics_port)
        except OSError as exc:
            telemetry.shutdown()
            raise ConfigError(
                f"the agent cannot serve /metrics on {cfg.listen_host}:{cfg.agent_metrics_port} "
                f"(agent_metrics_port): {exc.strerror or exc}"
            ) from None
        echo(f"opscale agent metrics on http://{cfg.listen_host}:{bound}/metrics")
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
    if keep_workers:
        echo("opscale agent stopped (--keep-workers: its replicas keep running; the next agent adopts them)")
    else:
        echo("opscale agent stopped, and its replicas with it")


NodeNameOpt = Annotated[str | None, Opt("--node-name", help="this node's identity (default: hostname)")]
StateDirOpt = Annotated[
    Path | None,
    Opt("--state-dir", help="where the agent remembers its pids (default: .opscale/agent/<node name>)"),
]


# `opscale agent` and `python -m opscale.agent` are this one group (the latter without the whole CLI).
group = typer.Typer(
    help="Run the node agent, or clean up after one that is gone.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    app.add_typer(group, name="agent")


@group.callback(invoke_without_command=True)
@handle_errors
@setting_flags(*AGENT_SETTINGS)
def agent_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    placement: Annotated[
        str | None, Opt("--placement", help="placement host:port [env: OPSCALE_PLACEMENT_ADDRESS]")
    ] = None,
    node_name: NodeNameOpt = None,
    fake_gpus: Annotated[
        str | None, Opt("--fake-gpus", help="pretend GPUs instead of NVML, e.g. 8xH100")
    ] = None,
    templates: Annotated[
        Path | None, Opt("--templates", help="YAML launch templates this agent allows")
    ] = None,
    state_dir: StateDirOpt = None,
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
    metrics_port: Annotated[
        int | None,
        Opt("--metrics-port", help="serve Prometheus /metrics on this port (0: any free; default: off)"),
    ] = None,
    keep_workers: Annotated[
        bool,
        Opt(
            "--keep-workers",
            help="on stop, leave the replicas running for the next agent to adopt (upgrades); "
            "by default stopping the agent stops them",
        ),
    ] = False,
    flags: dict[str, object] | None = None,
) -> None:
    """Run the node agent until SIGTERM/Ctrl-C: register with placement and run the replicas it places.

    Stopping it stops its replicas too, unless --keep-workers. One agent per state directory: a
    second one on the same directory exits with an error.
    """
    if ctx.invoked_subcommand is not None:
        return
    overrides: dict[str, object] = {
        "placement_address": placement,
        "ingest_address": ingest,
        "node_name": node_name,
        "fake_gpus": fake_gpus,
        "agent_templates_file": templates,
        "agent_state_dir": state_dir,
        "agent_max_restarts": max_restarts,
        "agent_restart_backoff_s": restart_backoff_s,
        "agent_metrics_port": metrics_port,
        **(flags or {}),
    }
    if label:
        overrides["node_labels"] = _labels(label)
    cfg = settings(config, **overrides)
    from opscale.telemetry import setup_logging

    setup_logging(cfg.log_level, cfg.log_format)
    logging.getLogger("opscale.agent").setLevel(cfg.log_level.value.upper())
    asyncio.run(_run_agent(cfg, keep_workers))


@group.command("cleanup")
@handle_errors
def cleanup_cmd(
    config: ConfigOpt = None,
    node_name: NodeNameOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Stop the workers left by an agent that is gone (killed, or stopped with --keep-workers).

    Refuses while an agent holds the state directory. Only processes the agent recorded (pid and
    start time) are signalled: SIGTERM, then SIGKILL after the stop grace period.
    """
    from opscale.agent.cleanup import cleanup

    cfg = settings(config, node_name=node_name, agent_state_dir=state_dir)
    directory = state_dir_of(cfg, cfg.node_name or socket.gethostname())
    if not directory.is_dir():
        raise ConfigError(f"--state-dir {directory}: no such directory (nothing to clean up)")
    done = cleanup(directory, cfg.stop_grace_s)
    forced = f" ({len(done.killed)} after SIGKILL)" if done.killed else ""
    echo(
        f"stopped {len(done.stopped)} worker processes{forced} recorded in {directory}; "
        f"{len(done.gone)} had already exited"
    )


def main() -> None:
    group()
