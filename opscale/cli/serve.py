"""`opscale serve <service>` (one service per process, production) and `opscale up` (all in one)."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Annotated

import typer

from opscale.cli.common import (
    ConfigOpt,
    CountersOpt,
    DatabaseOpt,
    HostOpt,
    MetricsPortOpt,
    echo,
    handle_errors,
    setting_flags,
    settings,
)
from opscale.cli.scrape_flags import (
    MaxGapOpt,
    ModelNameOpt,
    PrometheusSourceOpt,
    PrometheusUrlOpt,
    ScrapeDeploymentOpt,
    ScrapeOpt,
    ScrapeRoleOpt,
    TargetsFileOpt,
    with_scrape_flags,
)
from opscale.services.catalog import SERVICES
from opscale.services.main import serve
from opscale.services.runtime import prepare_embedded_database
from opscale.telemetry import setup_logging

log = logging.getLogger("opscale")


class ServiceName(enum.StrEnum):
    INGEST = "ingest"
    DECISION = "decision"
    PLACEMENT = "placement"
    KEDA = "keda"


# The settings README's table documents, as flags of the commands that use them (the ports of `up`
# per service; `serve` has --port for its one service).
PROCESS_SETTINGS = (
    "actuator",
    "log_level",
    "log_format",
    "otlp_endpoint",
    "shutdown_grace_s",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
    "allow_insecure",
    "auth_tokens_file",
    "token",
    "whatif_cpu_budget_s",
    "whatif_workers",
    "lease_ttl_s",
)
UP_PORTS = ("ingest_port", "decision_port", "placement_port", "keda_port")

PortOpt = Annotated[int | None, typer.Option("--port", help="gRPC port (0: any free)", show_default=False)]


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    @setting_flags(*PROCESS_SETTINGS)
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
        model_name: ModelNameOpt = None,
        targets_file: TargetsFileOpt = None,
        max_gap: MaxGapOpt = None,
        prometheus_url: PrometheusUrlOpt = None,
        prometheus_source: PrometheusSourceOpt = None,
        flags: dict[str, object] | None = None,
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
            **(flags or {}),
        )
        cfg = with_scrape_flags(
            cfg,
            ingest=service is ServiceName.INGEST,
            urls=scrape or [],
            deployments=deployment or [],
            roles=role or [],
            models=model_name or [],
            targets_file=targets_file,
            max_gap_s=max_gap,
            prometheus_url=prometheus_url,
            prometheus_sources=prometheus_source or [],
        )
        setup_logging(cfg.log_level, cfg.log_format)
        asyncio.run(serve(cfg, [entry], f"opscale-{service.value}", echo))

    @app.command("up")
    @handle_errors
    @setting_flags(*UP_PORTS, *PROCESS_SETTINGS)
    def up_cmd(
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        counters_url: CountersOpt = None,
        host: HostOpt = None,
        metrics_port: MetricsPortOpt = None,
        flags: dict[str, object] | None = None,
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
            **(flags or {}),
        )
        setup_logging(cfg.log_level, cfg.log_format)
        if prepare_embedded_database(cfg.database_url):
            echo(f"created the embedded database {cfg.database_url}")
        asyncio.run(serve(cfg, list(SERVICES.values()), "opscale", echo))
