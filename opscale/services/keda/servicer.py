"""KEDA's ``externalscaler.ExternalScaler`` over gRPC: validate, one call into the app, answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from opscale.api.keda import externalscaler_pb2 as pb
from opscale.api.keda import externalscaler_pb2_grpc
from opscale.services.keda.app import TARGET, PoolTarget, ScalerApp, target_of

Ctx = grpc.aio.ServicerContext[Any, Any]


def _spec(target: PoolTarget) -> pb.GetMetricSpecResponse:
    return pb.GetMetricSpecResponse(
        metricSpecs=[pb.MetricSpec(metricName=target.metric_name, targetSize=TARGET, targetSizeFloat=TARGET)]
    )


class KedaScalerServicer(externalscaler_pb2_grpc.ExternalScalerServicer):
    def __init__(self, app: ScalerApp, stopping: asyncio.Event) -> None:
        self._app = app
        self._stopping = stopping  # set when the service stops: streams end

    async def IsActive(self, request: pb.ScaledObjectRef, context: Ctx) -> pb.IsActiveResponse:
        return pb.IsActiveResponse(result=await self._app.replicas(target_of(request.scalerMetadata)) > 0)

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: Ctx
    ) -> AsyncIterator[pb.IsActiveResponse]:
        # Every change of the count is pushed (not only flips of activity): KEDA re-checks the
        # ScaledObject on each message, so a new decision reaches the HPA without waiting for a poll.
        async for replicas in self._app.changes(target_of(request.scalerMetadata), self._stopping):
            yield pb.IsActiveResponse(result=replicas > 0)

    async def GetMetricSpec(self, request: pb.ScaledObjectRef, context: Ctx) -> pb.GetMetricSpecResponse:
        target = target_of(request.scalerMetadata)
        await self._app.replicas(target)  # an unknown deployment or pool is NOT_FOUND here too
        return _spec(target)

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: Ctx) -> pb.GetMetricsResponse:
        target = target_of(request.scaledObjectRef.scalerMetadata)
        replicas = await self._app.replicas(target)
        name = request.metricName or target.metric_name
        return pb.GetMetricsResponse(
            metricValues=[pb.MetricValue(metricName=name, metricValue=replicas, metricValueFloat=replicas)]
        )

    async def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: Ctx
    ) -> AsyncIterator[pb.GetMetricSpecResponse]:
        # The spec (this pool's metric, target 1) never changes while the stream is open: KEDA gets it
        # at once, as its contract asks, and the stream stays open until either side stops.
        target = target_of(request.scalerMetadata)
        await self._app.replicas(target)
        yield _spec(target)
        await self._stopping.wait()
