"""`opscale serve <service>` (one service per process, production) and `opscale up` (all in one)."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Annotated

import typer
from pydantic import ValidationError

from clients.cli.common import (
    ConfigOpt,
    CountersOpt,
    DatabaseOpt,
    HostOpt,
    MetricsPortOpt,
    echo,
    fail,
    handle_errors,
    settings,
)
from clients.cli.exit_codes import ExitCode
from opscale.config import ScrapeTarget, Settings
from opscale.telemetry import setup_logging
from services.catalog import SERVICES
from services.main import serve
from services.runtime import prepare_embedded_database

log = logging.getLogger("opscale")


class ServiceName(enum.StrEnum):
    INGEST = "ingest"
    DECISION = "decision"
    PLACEMENT = "placement"
    KEDA = "keda"


PortOpt = Annotated[int | None, typer.Option("--port", help="gRPC port (0: any free)", show_default=False)]
ScrapeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--scrape",
        help="ingest: an engine's /metrics URL to poll (repeatable; pairs with --deployment and --role)",
        show_default=False,
    ),
]
ScrapeDeploymentOpt = Annotated[
    list[str] | None,
    typer.Option("--deployment", help="ingest: the deployment of the matching --scrape", show_default=False),
]
ScrapeRoleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--role", help="ingest: prefill, decode or serving, for the matching --scrape", show_default=False
    ),
]


def _with_scrape_targets(
    cfg: Settings, service: ServiceName, urls: list[str], deployments: list[str], roles: list[str]
) -> Settings:
    """Append the --scrape/--deployment/--role triples (paired in order) to the configured targets."""
    if not (urls or deployments or roles):
        return cfg
    if service is not ServiceName.INGEST:
        raise fail("--scrape, --deployment and --role apply to `opscale serve ingest` only", ExitCode.USAGE)
    if not len(urls) == len(deployments) == len(roles):
        raise fail(
            f"--scrape, --deployment and --role pair up in order; got {len(urls)} --scrape, "
            f"{len(deployments)} --deployment and {len(roles)} --role",
            ExitCode.USAGE,
        )
    added = []
    for i, (url, name, role) in enumerate(zip(urls, deployments, roles, strict=True)):
        try:
            added.append(ScrapeTarget.model_validate({"url": url, "deployment": name, "role": role}))
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise fail(f"--scrape #{i + 1} ({url}): {errors}", ExitCode.USAGE) from None
    return cfg.model_copy(update={"scrape_targets": [*cfg.scrape_targets, *added]})


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    def serve_cmd(
        service: Annotated[ServiceName, typer.Argument(help="which service to run")],
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        counters_url: CountersOpt = None,
        host: HostOpt = None,
        port: PortOpt = None,
        metrics_port: MetricsPortOpt = None,
        scrape: ScrapeOpt = None,
        deployment: ScrapeDeploymentOpt = None,
        role: ScrapeRoleOpt = None,
    ) -> None:
        """Run one control-plane service until SIGTERM/Ctrl-C (production: one process per service)."""
        entry = SERVICES[service.value]
        overrides = {entry.port_setting: port} if port is not None else {}
        cfg = settings(
            config,
            database_url=database_url,
            counters_url=counters_url,
            listen_host=host,
            metrics_port=metrics_port,
            **overrides,
        )
        cfg = _with_scrape_targets(cfg, service, scrape or [], deployment or [], role or [])
        setup_logging(cfg.log_level, cfg.log_format)
        asyncio.run(serve(cfg, [entry], f"opscale-{service.value}", echo))

    @app.command("up")
    @handle_errors
    def up_cmd(
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        counters_url: CountersOpt = None,
        host: HostOpt = None,
        metrics_port: MetricsPortOpt = None,
    ) -> None:
        """Run ingest, decision, placement and the KEDA scaler in one process (embedded default: SQLite +
        in-process counters).

        On the embedded SQLite default a new database file gets its schema created; any other database
        must be migrated first with `opscale db upgrade`.
        """
        cfg = settings(
            config,
            database_url=database_url,
            counters_url=counters_url,
            listen_host=host,
            metrics_port=metrics_port,
        )
        setup_logging(cfg.log_level, cfg.log_format)
        if prepare_embedded_database(cfg.database_url):
            echo(f"created the embedded database {cfg.database_url}")
        asyncio.run(serve(cfg, list(SERVICES.values()), "opscale", echo))
