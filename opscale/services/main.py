"""Running control-plane services in this process: ``opscale serve <service>`` and ``opscale up`` (the CLI
parses flags and calls ``serve``), and ``python -m services.<service>`` (settings from the environment
and ``OPSCALE_CONFIG`` only; calls ``main``). The services never import the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable, Sequence

from opscale.config import Settings, load_settings, redact_url
from opscale.errors import ConfigError
from opscale.grpcutil.server import RunningService, ServerSecurity, ServiceDef, run_until_signal, tune_gc
from opscale.services.catalog import SERVICES, ServiceEntry
from opscale.services.runtime import open_runtime
from opscale.telemetry import build_telemetry, setup_logging

#: Each service after those it calls (decision hands off to placement; the KEDA scaler reads decision).
START_ORDER = ("placement", "ingest", "decision", "keda")


async def serve(
    cfg: Settings, entries: Sequence[ServiceEntry], telemetry_name: str, say: Callable[[str], None]
) -> None:
    """Run ``entries`` until SIGTERM/SIGINT, each on its configured port, then stop them cleanly."""
    security = ServerSecurity.of(cfg)  # reads the tokens file: a bad one stops the start here
    # Several services in this process (`opscale up`): each traces under its own service.name.
    telemetry = build_telemetry(telemetry_name, otlp_endpoint=cfg.otlp_endpoint, per_service=len(entries) > 1)
    runtime = await open_runtime(cfg, telemetry)
    try:
        metrics = ""
        if cfg.metrics_port is not None:
            try:
                bound = telemetry.serve_metrics(cfg.listen_host, cfg.metrics_port)
            except OSError as exc:  # in use (a second `opscale up`), or an address this host lacks
                raise ConfigError(
                    f"metrics cannot listen on {cfg.listen_host}:{cfg.metrics_port} (metrics_port): "
                    f"{exc.strerror or exc}; port 0 picks a free one"
                ) from None
            metrics = f"; metrics on http://{cfg.listen_host}:{bound}/metrics"

        def ready(running: list[RunningService]) -> None:
            tune_gc(cfg.gc_thresholds)
            listeners = ", ".join(f"{s.name} on {cfg.listen_host}:{s.port}" for s in running)
            say(f"opscale ready: {listeners}{metrics}")
            say(f"  database {redact_url(cfg.database_url)}, counters {redact_url(cfg.counters_url)}")
            say(f"  {describe_security(security)}")
            say("  Ctrl-C (or SIGTERM) stops it.")

        addresses: dict[str, str] = {}

        def builder(entry: ServiceEntry) -> Callable[[], ServiceDef]:
            def build() -> ServiceDef:
                # Services started before this one in this process: reach them where they listen.
                runtime.settings = cfg.model_copy(update=addresses)
                return entry.build(dataclasses.replace(runtime, telemetry=telemetry.service(entry.name)))

            return build

        def started(entry: ServiceEntry, port: int) -> None:
            field = f"{entry.name}_address"  # the setting other services reach it by, if it has one
            if field in Settings.model_fields and not getattr(cfg, field):
                addresses[field] = cfg.model_copy(update={entry.port_setting: port}).address_of(entry.name)

        ordered = sorted(entries, key=lambda e: START_ORDER.index(e.name))
        services = [(builder(e), getattr(cfg, e.port_setting), e.port_setting) for e in ordered]
        await run_until_signal(
            services,
            cfg.listen_host,
            telemetry,
            cfg.shutdown_grace_s,
            security=security,
            on_ready=ready,
            on_started=lambda i, svc: started(ordered[i], svc.port),
        )
    finally:
        await runtime.close()
        telemetry.shutdown()
    say("opscale stopped cleanly")


def describe_security(security: ServerSecurity) -> str:
    tls = security.tls
    transport = "mTLS" if tls.requires_client_certs else "TLS" if tls.serves_tls else "plaintext"
    auth = security.auth.describe() if security.auth is not None else "none (every caller trusted)"
    return f"transport {transport}, authentication {auth}"


def main(service: str) -> None:
    """``python -m services.<service>``: one service, configured from the environment (exit 2 on bad
    settings, naming the setting, as ``opscale serve`` does)."""
    try:
        cfg = load_settings()
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(cfg.log_level, cfg.log_format)
    asyncio.run(serve(cfg, [SERVICES[service]], f"opscale-{service}", print))
