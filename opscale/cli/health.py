"""`opscale health ADDRESS`: ask a service's grpc.health.v1 whether it is SERVING, over the same TLS as
the process's settings (the probe of compose healthchecks and Kubernetes exec probes, which cannot
speak TLS themselves)."""

from __future__ import annotations

from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opscale.cli.common import ConfigOpt, echo, fail, handle_errors, settings
from opscale.cli.exit_codes import ExitCode
from opscale.grpcutil.client import ClientSecurity, sync_channel


def register(app: typer.Typer) -> None:
    @app.command("health")
    @handle_errors
    def health_cmd(
        address: Annotated[str, typer.Argument(help="host:port of the service")],
        service: Annotated[
            str,
            typer.Option(
                "--service",
                help="'' (default): readiness of the whole server, NOT_SERVING while its database or "
                "counter store is away or a background task died; 'liveness': only whether the process "
                "works (the Kubernetes liveness probe); or one grpc service name",
            ),
        ] = "",
        timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="seconds")] = 3.0,
        config: ConfigOpt = None,
    ) -> None:
        """Exit 0 if the service answers SERVING (TLS files and token from the settings), else 1 or 6."""
        security = ClientSecurity.of(settings(config))
        with sync_channel(address, security) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                )
            except grpc.RpcError as exc:
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                raise fail(f"{address}: {details}", ExitCode.UNAVAILABLE) from None
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise fail(f"{address}: {status}", ExitCode.FAILURE)
        echo(f"{address}: {status}")
