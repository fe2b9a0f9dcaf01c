"""The asyncio client: record on the hot path, a background task sends; get or watch decisions.

    async with AsyncOpscaleClient("ingest:50061", deployment="llama", decision_address="decision:50062") as c:
        c.record_arrival(812, 230)          # returns at once
        c.record_ttft(143.0)
        decision = await c.get_decision()

``record_*`` must be called from the client's event loop thread (use ``OpscaleClient`` from threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from opscale.api.decision.v1 import decision_pb2, decision_pb2_grpc
from opscale.api.ingest.v1 import ingest_pb2_grpc
from opscale.grpcutil.client import ClientSecurity, instrumented_channel
from opscale.grpcutil.tls import TlsFiles
from opscale.sdk.buffer import RETRYABLE, Backoff, SampleBuffer, SdkStats
from opscale.sdk.recorder import Recorder


class AsyncOpscaleClient(Recorder):
    def __init__(
        self,
        ingest_address: str,
        *,
        deployment: str = "",
        instance: str = "",
        decision_address: str | None = None,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_buffered: int = 50_000,
        max_retry_s: float = 300.0,
        rpc_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        token: str = "",
        tls: TlsFiles | None = None,
    ) -> None:
        """``batch_size`` at most 2,500 (the service's limit); ``max_buffered`` bounds memory: beyond
        it the oldest samples are dropped and counted (``stats().dropped_overflow``). ``token`` is sent
        as a bearer token (the ``ingest`` role pushes; ``viewer`` reads decisions) and ``tls`` names
        the CA to verify the services and, for mTLS, a client certificate and key."""
        if not 1 <= batch_size <= 2500:
            raise ValueError(f"batch_size must be in [1, 2500], got {batch_size}")
        super().__init__(SampleBuffer(max_buffered, batch_size, max_retry_s), deployment, instance, clock)
        self._ingest_address = ingest_address
        self._security = ClientSecurity(tls or TlsFiles(), token)
        self._decision_address = decision_address
        self._flush_interval_s = flush_interval_s
        self._timeout_s = rpc_timeout_s
        self._backoff = Backoff()
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ingest: grpc.aio.Channel | None = None
        self._decision: grpc.aio.Channel | None = None

    async def __aenter__(self) -> AsyncOpscaleClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the background sender (``async with`` does it); record_* work before it too."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(self._stub()), name="opscale-sdk-sender")

    def _stub(self) -> ingest_pb2_grpc.IngestServiceStub:
        if self._ingest is None:
            self._ingest = instrumented_channel(self._ingest_address, None, security=self._security)
        return ingest_pb2_grpc.IngestServiceStub(self._ingest)

    def _wake(self) -> None:
        self._wakeup.set()

    def stats(self) -> SdkStats:
        return self._buffer.stats()

    async def _send_one(self, stub: ingest_pb2_grpc.IngestServiceStub) -> float:
        """Send the next batch (the one being retried, else new samples). Returns how long to back off
        before the next attempt: 0 unless the control plane is unavailable."""
        batch = self._buffer.next_batch(self._clock())
        if batch is None:
            return 0.0
        try:
            await stub.PushSamples(batch.request(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if self._buffer.failed(exc.code(), exc.details() or "", self._clock()):
                return self._backoff.delay(batch.attempts)
            return 0.0
        self._buffer.sent()
        return 0.0

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _run(self, stub: ingest_pb2_grpc.IngestServiceStub) -> None:
        while not self._stop.is_set():
            if len(self._buffer) < self._buffer.batch_size and self._buffer.pending is None:
                # Partial batches go out every flush interval; a full one wakes the sender at once.
                self._wakeup.clear()
                await self._wait(self._wakeup, self._flush_interval_s)
            backoff = await self._send_one(stub)
            if backoff:  # only a stop cuts a back-off short: new samples must not speed up retries
                await self._wait(self._stop, backoff)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Send everything buffered now; True if the buffer emptied within ``timeout_s``."""
        stub = self._stub()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.stats().buffered and loop.time() < deadline:
            backoff = await self._send_one(stub)
            await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
        return not self.stats().buffered

    async def close(self, flush_timeout_s: float = 2.0) -> None:
        """Stop the sender, try to send what is left for ``flush_timeout_s``, close the channels."""
        if self._task is not None:
            self._stop.set()
            self._wakeup.set()
            await self._task
            self._task = None
        if self._ingest is not None and self.stats().buffered:
            await self.flush(flush_timeout_s)
        for channel in (self._ingest, self._decision):
            if channel is not None:
                await channel.close(None)
        self._ingest = self._decision = None
        self._stop.clear()

    # --- decisions ---------------------------------------------------------------------------------

    def _decisions(self) -> decision_pb2_grpc.DecisionServiceStub:
        if self._decision_address is None:
            raise ValueError("this client was built without a decision_address")
        if self._decision is None:
            self._decision = instrumented_channel(self._decision_address, None, security=self._security)
        return decision_pb2_grpc.DecisionServiceStub(self._decision)

    async def get_decision(self, deployment: str | None = None) -> decision_pb2.Decision:
        """The latest decision for ``deployment`` (default: the client's); raises ``grpc.aio.AioRpcError``."""
        request = decision_pb2.GetDecisionRequest(deployment=deployment or self._deployment)
        reply: decision_pb2.GetDecisionResponse = await self._decisions().GetDecision(
            request, timeout=self._timeout_s
        )
        return reply.decision

    async def watch_decisions(
        self, deployments: Sequence[str] = (), *, include_current: bool = True
    ) -> AsyncIterator[decision_pb2.Decision]:
        """Each new decision as it is made, reconnecting (with back-off, and asking for the current
        decisions again so none is missed) while the decision service is unavailable; a caller error
        (unknown deployment, ...) ends the iteration with the ``AioRpcError``."""
        request = decision_pb2.WatchDecisionsRequest(
            deployments=list(deployments), include_current=include_current
        )
        attempt = 0
        while True:
            call = self._decisions().WatchDecisions(request)
            try:
                async for reply in call:
                    attempt = 0
                    yield reply.decision
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
            finally:
                call.cancel()
            request.include_current = True
            attempt += 1
            await asyncio.sleep(self._backoff.delay(attempt))
