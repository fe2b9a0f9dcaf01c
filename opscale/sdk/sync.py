"""The blocking client, for serving frameworks without an asyncio loop (or that record from many
threads): ``record_*`` append to the bounded buffer from any thread; one daemon thread sends.

    client = OpscaleClient("ingest:50061", deployment="llama", decision_address="decision:50062")
    client.record_queue("decode", running=14, waiting=3, kv_cache_usage_fraction=0.41)
    for decision in client.watch_decisions(["llama"]):
        ...
    client.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import grpc

from opscale.api.decision.v1 import decision_pb2, decision_pb2_grpc
from opscale.api.ingest.v1 import ingest_pb2_grpc
from opscale.grpcutil.client import ClientSecurity, sync_channel
from opscale.grpcutil.tls import TlsFiles
from opscale.sdk.buffer import RETRYABLE, Backoff, SampleBuffer, SdkStats
from opscale.sdk.recorder import Recorder


class OpscaleClient(Recorder):
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
        start: bool = True,
    ) -> None:
        """Same parameters as ``AsyncOpscaleClient``; the sender thread starts unless ``start=False``."""
        if not 1 <= batch_size <= 2500:
            raise ValueError(f"batch_size must be in [1, 2500], got {batch_size}")
        super().__init__(SampleBuffer(max_buffered, batch_size, max_retry_s), deployment, instance, clock)
        self._flush_interval_s = flush_interval_s
        self._timeout_s = rpc_timeout_s
        self._backoff = Backoff()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._security = ClientSecurity(tls or TlsFiles(), token)
        self._ingest = sync_channel(ingest_address, self._security)
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._ingest)
        self._decision_address = decision_address
        self._decision: grpc.Channel | None = None
        self._send_lock = threading.Lock()  # the sender thread and flush() never send at once
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="opscale-sdk-sender", daemon=True)
            self._thread.start()

    def __enter__(self) -> OpscaleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        self._wakeup.set()

    def stats(self) -> SdkStats:
        return self._buffer.stats()

    def _send_one(self) -> float:
        """As ``AsyncOpscaleClient._send_one``: the back-off before the next attempt (0: none)."""
        with self._send_lock:
            batch = self._buffer.next_batch(self._clock())
            if batch is None:
                return 0.0
            try:
                self._stub.PushSamples(batch.request(), timeout=self._timeout_s)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = (exc.details() if isinstance(exc, grpc.Call) else None) or ""
                if self._buffer.failed(code, details, self._clock()):
                    return self._backoff.delay(batch.attempts)
                return 0.0
            self._buffer.sent()
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            if len(self._buffer) < self._buffer.batch_size and self._buffer.pending is None:
                self._wakeup.wait(self._flush_interval_s)
                self._wakeup.clear()
            backoff = self._send_one()
            if backoff:
                self._stop.wait(backoff)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Send everything buffered now (blocking); True if the buffer emptied within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.stats().buffered and time.monotonic() < deadline:
            backoff = self._send_one()
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
        return not self.stats().buffered

    def close(self, flush_timeout_s: float = 2.0) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wakeup.set()
            self._thread.join()
            self._thread = None
        if self.stats().buffered:
            self.flush(flush_timeout_s)
        self._ingest.close()
        if self._decision is not None:
            self._decision.close()

    # --- decisions ---------------------------------------------------------------------------------

    def _decisions(self) -> decision_pb2_grpc.DecisionServiceStub:
        if self._decision_address is None:
            raise ValueError("this client was built without a decision_address")
        if self._decision is None:
            self._decision = sync_channel(self._decision_address, self._security)
        return decision_pb2_grpc.DecisionServiceStub(self._decision)

    def get_decision(self, deployment: str | None = None) -> decision_pb2.Decision:
        request = decision_pb2.GetDecisionRequest(deployment=deployment or self._deployment)
        reply: decision_pb2.GetDecisionResponse = self._decisions().GetDecision(
            request, timeout=self._timeout_s
        )
        return reply.decision

    def watch_decisions(
        self, deployments: Sequence[str] = (), *, include_current: bool = True
    ) -> Iterator[decision_pb2.Decision]:
        """As ``AsyncOpscaleClient.watch_decisions``, blocking. Stop it with ``close()`` on the
        returned generator (or by breaking out of the loop)."""
        request = decision_pb2.WatchDecisionsRequest(
            deployments=list(deployments), include_current=include_current
        )
        attempt = 0
        while True:
            call = self._decisions().WatchDecisions(request)
            try:
                for reply in call:
                    attempt = 0
                    yield reply.decision
                return
            except grpc.RpcError as exc:
                if not isinstance(exc, grpc.Call) or exc.code() not in RETRYABLE:
                    raise
            finally:
                call.cancel()
            request.include_current = True
            attempt += 1
            time.sleep(self._backoff.delay(attempt))
