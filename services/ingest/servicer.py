"""IngestService over gRPC: validate, convert, one call into the app, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.api.ingest.v1 import ingest_pb2_grpc
from services.ingest.app import IngestApp
from services.ingest.convert import window_query_from_pb


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, app: IngestApp) -> None:
        self._app = app

    async def PushSamples(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.PushSamplesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PushSamplesResponse:
        await self._app.push()
        return pb.PushSamplesResponse()

    async def StreamSamples(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.StreamSamplesRequest], context: grpc.aio.ServicerContext
    ) -> pb.StreamSamplesResponse:
        await self._app.push()
        return pb.StreamSamplesResponse()

    async def GetWindowSummary(  # noqa: N802
        self, request: pb.GetWindowSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWindowSummaryResponse:
        await self._app.window_summary(window_query_from_pb(request))
        return pb.GetWindowSummaryResponse()
