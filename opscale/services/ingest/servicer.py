"""IngestService over gRPC: convert, one call into the app, convert back.

A stream is a sequence of independent batches: each is validated and applied all or nothing as in
PushSamples. A refused batch ends the stream with its error, prefixed with the batch's position, and
the batches before it stay applied (the response tells a client how far it got only on success, so a
client that must know resends with the same batch ids: duplicates are not counted twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.api.ingest.v1 import ingest_pb2_grpc
from opscale.errors import OpscaleError
from opscale.services.ingest.app import IngestApp
from opscale.services.ingest.convert import batch_from_pb, summary_to_pb, window_query_from_pb
from opscale.signals import SampleBatch


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, app: IngestApp) -> None:
        self._app = app

    def _batch(self, request: pb.PushSamplesRequest | pb.StreamSamplesRequest, source: str) -> SampleBatch:
        try:
            return batch_from_pb(request)
        except OpscaleError as exc:
            self._app.refused(exc, source=source)  # so a malformed batch shows in the rejection metrics
            raise

    async def PushSamples(
        self,
        request: pb.PushSamplesRequest,
        context: grpc.aio.ServicerContext[pb.PushSamplesRequest, pb.PushSamplesResponse],
    ) -> pb.PushSamplesResponse:
        result = await self._app.push(self._batch(request, "push"), source="push")
        return pb.PushSamplesResponse(accepted_samples=result.accepted_samples, duplicate=result.duplicate)

    async def StreamSamples(
        self,
        request_iterator: AsyncIterator[pb.StreamSamplesRequest],
        context: grpc.aio.ServicerContext[pb.StreamSamplesRequest, pb.StreamSamplesResponse],
    ) -> pb.StreamSamplesResponse:
        reply = pb.StreamSamplesResponse()
        async for request in request_iterator:
            try:
                result = await self._app.push(self._batch(request, "stream"), source="stream")
            except OpscaleError as exc:
                exc.message = f"stream batch {reply.batches} (batch_id {request.batch_id!r}): {exc.message}"
                raise
            reply.batches += 1
            reply.accepted_samples += result.accepted_samples
            reply.duplicate_batches += int(result.duplicate)
        return reply

    async def GetWindowSummary(
        self,
        request: pb.GetWindowSummaryRequest,
        context: grpc.aio.ServicerContext[pb.GetWindowSummaryRequest, pb.GetWindowSummaryResponse],
    ) -> pb.GetWindowSummaryResponse:
        summary = await self._app.window_summary(window_query_from_pb(request))
        return pb.GetWindowSummaryResponse(summary=summary_to_pb(summary))
