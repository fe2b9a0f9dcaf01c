"""`opscale worker`: the reference operator worker the node agent launches (see opscale/worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from opscale.cli.common import echo, handle_errors
from opscale.errors import ConfigError, InvalidArgument
from opscale.grpcutil.tls import TlsFiles

Opt = typer.Option


async def _run(
    replica_id: str,
    host: str,
    port: int,
    deployment: str,
    stage: str,
    operator: str,
    model: str,
    gpu_type: str,
    gpus: float,
    visible: str,
    grace_s: float,
    tls: TlsFiles,
    allow_insecure: bool,
) -> None:
    from opscale.api.worker.v1 import worker_pb2
    from opscale.grpcutil.auth import Authenticator
    from opscale.grpcutil.server import (
        ServerSecurity,
        ServiceDef,
        start_service,
        stop_service,
        wait_for_signal,
    )
    from opscale.telemetry import build_telemetry
    from opscale.worker.service import (
        Worker,
        WorkerIdentity,
        parse_visible_devices,
        register,
        service_time_fn,
    )

    identity = WorkerIdentity(replica_id, deployment, stage, operator, parse_visible_devices(visible))
    worker = Worker(identity, service_time_fn(model, gpu_type, stage, operator, gpus))
    telemetry = build_telemetry("opscale-worker")
    name = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
    definition = ServiceDef(name="worker", service_names=(name,), register=lambda s: register(s, worker))
    # With a CA, callers need a certificate from it, and its OU is their role (the agent drains).
    auth = Authenticator({}, certificates=True) if tls.requires_client_certs else None
    security = ServerSecurity(tls, allow_insecure, auth)
    running = await start_service(definition, host, port, telemetry, port_setting="--port", security=security)
    echo(f"opscale worker ready: replica {replica_id} on {host}:{running.port} GPUs {visible or '-'}")
    try:
        await wait_for_signal()
        worker.draining = True  # SIGTERM: stop taking batches, let in-flight ones finish within the grace
        await worker.drain(grace_s)
    finally:
        await stop_service(running, grace_s)
        telemetry.shutdown()
    echo("opscale worker stopped cleanly")


def register(app: typer.Typer) -> None:
    @app.command("worker")
    @handle_errors
    def worker_cmd(
        replica_id: Annotated[str, Opt("--replica-id", help="the replica this process is")],
        port: Annotated[int, Opt("--port", help="gRPC port (0: any free)")] = 0,
        host: Annotated[str, Opt("--host", help="address to bind")] = "127.0.0.1",
        deployment: Annotated[str, Opt("--deployment")] = "",
        stage: Annotated[str, Opt("--stage", help="prefill, decode or serving")] = "decode",
        operator: Annotated[str, Opt("--operator", help="attention, ffn, experts, … or model")] = "model",
        model: Annotated[str, Opt("--model", help="model preset for service times (empty: fixed cost)")] = "",
        gpu_type: Annotated[str, Opt("--gpu-type")] = "H100",
        gpus: Annotated[int, Opt("--gpus", help="GPUs per replica (tensor parallel)")] = 1,
        gpu_share: Annotated[
            float, Opt("--gpu-share", help="below 1: the share of one GPU it runs on (passes take 1/share)")
        ] = 1.0,
        visible: Annotated[
            str, Opt("--gpu-indices", envvar="CUDA_VISIBLE_DEVICES", help="the GPUs it holds")
        ] = "",
        grace_s: Annotated[float, Opt("--grace-s", help="in-flight work allowed on SIGTERM")] = 5.0,
        tls_cert: Annotated[
            Path | None, Opt("--tls-cert", envvar="OPSCALE_TLS_CERT_FILE", help="serve TLS with this cert")
        ] = None,
        tls_key: Annotated[Path | None, Opt("--tls-key", envvar="OPSCALE_TLS_KEY_FILE")] = None,
        tls_ca: Annotated[
            Path | None,
            Opt("--tls-ca", envvar="OPSCALE_TLS_CA_FILE", help="require client certs from this CA"),
        ] = None,
        allow_insecure: Annotated[
            bool, Opt("--allow-insecure", help="plaintext beyond loopback (never in production)")
        ] = False,
    ) -> None:
        """Run the reference operator worker (normally started by `opscale agent`, not by hand).

        The agent passes its node certificate in OPSCALE_TLS_* when it has one: the control port then
        serves TLS (mTLS with a CA); without, it listens on loopback only."""
        if not 0.0 < gpu_share <= 1.0 or (gpu_share < 1.0 and gpus != 1):
            raise InvalidArgument(
                f"--gpu-share must be in (0, 1], and 1 unless --gpus is 1; got {gpu_share} with {gpus} GPUs",
                field="--gpu-share",
            )
        size = gpu_share if gpu_share < 1.0 else float(max(1, gpus))
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        tls = TlsFiles(tls_cert, tls_key, tls_ca if tls_cert is not None else None)
        asyncio.run(
            _run(
                replica_id,
                host,
                port,
                deployment,
                stage,
                operator,
                model,
                gpu_type,
                size,
                visible,
                grace_s,
                tls,
                allow_insecure,
            )
        )


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()
