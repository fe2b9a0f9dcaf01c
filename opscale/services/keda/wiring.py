"""Builds the KEDA external scaler service from a runtime: the ExternalScaler servicer and the task that
follows the decision service's watch."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from opscale.api.keda import externalscaler_pb2, externalscaler_pb2_grpc
from opscale.grpcutil.client import ClientSecurity, instrumented_channel
from opscale.grpcutil.server import ServiceDef
from opscale.services.keda.app import ScalerApp
from opscale.services.keda.reader import GrpcDecisionReader
from opscale.services.keda.servicer import KedaScalerServicer
from opscale.services.runtime import Runtime

SERVICE_NAME = externalscaler_pb2.DESCRIPTOR.services_by_name["ExternalScaler"].full_name


def build(runtime: Runtime) -> ServiceDef:
    target = runtime.settings.address_of("decision")
    channel = instrumented_channel(target, runtime.telemetry, security=ClientSecurity.of(runtime.settings))
    app = ScalerApp(GrpcDecisionReader(channel, target))
    stopping = asyncio.Event()
    servicer = KedaScalerServicer(app, stopping)

    def register(server: grpc.aio.Server) -> None:
        externalscaler_pb2_grpc.add_ExternalScalerServicer_to_server(servicer, server)

    async def follow(service_stopping: asyncio.Event) -> None:
        follower = asyncio.create_task(app.follow(stopping))
        await service_stopping.wait()
        stopping.set()  # ends the open streams too
        # The follower waits on the decision service's watch, whose next message may be minutes away:
        # left to see ``stopping`` on its own, it held every shutdown for the whole grace.
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

    async def close() -> None:
        await channel.close(None)

    return ServiceDef(
        name="keda", service_names=(SERVICE_NAME,), register=register, background=[follow], on_stop=[close]
    )
