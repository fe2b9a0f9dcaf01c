"""The SDK's bounded sample buffer and the batching/retry bookkeeping both clients share.

The serving path only ever appends to the buffer: O(1), never waits on the network. When the buffer
is full the *oldest* sample is dropped and counted (fresh load matters more to an autoscaler than old
load). A batch taken for sending keeps its batch id until the control plane acknowledges it, so a
retry after a lost reply is not counted twice; it is given up, and counted, on a permanent error or
when it has been retried for longer than ``max_retry_s``.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field

import grpc

from opscale.api.ingest.v1 import ingest_pb2 as pb

# Worth retrying: the control plane or the network is down or busy. Anything else (a refused batch,
# an unknown deployment, a server bug) would fail the same way again.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


@dataclass(frozen=True, slots=True)
class SdkStats:
    buffered: int  # samples waiting to be sent
    sent_samples: int  # acknowledged by the control plane (duplicates included: they were stored before)
    sent_batches: int
    dropped_overflow: int  # oldest samples dropped because the buffer was full
    dropped_rejected: int  # samples of batches the control plane refused (see last_error)
    dropped_expired: int  # samples of batches retried for longer than max_retry_s
    dropped_invalid: int  # values refused at record time (NaN, negative, ...)
    retries: int
    last_error: str | None


@dataclass
class PendingBatch:
    batch_id: str
    samples: list[pb.Sample]
    first_try_s: float
    attempts: int = 0

    def request(self) -> pb.PushSamplesRequest:
        return pb.PushSamplesRequest(batch_id=self.batch_id, samples=self.samples)


@dataclass
class Backoff:
    """Exponential with full jitter (the AWS architecture blog's variant): spreads reconnecting clients."""

    base_s: float = 0.1
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempt, 30)))


class SampleBuffer:
    """Thread-safe; ``append`` is the only call the serving path makes."""

    def __init__(self, max_buffered: int, batch_size: int, max_retry_s: float) -> None:
        if max_buffered < 1 or batch_size < 1:
            raise ValueError("max_buffered and batch_size must be at least 1")
        self._samples: deque[pb.Sample] = deque()
        self._max = max_buffered
        self.batch_size = batch_size
        self.max_retry_s = max_retry_s
        self._lock = threading.Lock()
        self._overflow = self._rejected = self._expired = self._invalid = 0
        self._sent_samples = self._sent_batches = self._retries = 0
        self._last_error: str | None = None
        self.pending: PendingBatch | None = None

    def append(self, sample: pb.Sample) -> bool:
        """Adds ``sample``; True when the buffer now holds a full batch (time to wake the sender)."""
        with self._lock:
            if len(self._samples) >= self._max:
                self._samples.popleft()
                self._overflow += 1
            self._samples.append(sample)
            return len(self._samples) >= self.batch_size

    def invalid(self) -> None:
        with self._lock:
            self._invalid += 1

    def __len__(self) -> int:
        return len(self._samples)

    def next_batch(self, now_s: float) -> PendingBatch | None:
        """The batch to send: the one being retried, else up to ``batch_size`` new samples."""
        with self._lock:
            if self.pending is None and self._samples:
                n = min(self.batch_size, len(self._samples))
                taken = [self._samples.popleft() for _ in range(n)]
                self.pending = PendingBatch(uuid.uuid4().hex, taken, now_s)
            return self.pending

    def sent(self) -> None:
        with self._lock:
            if self.pending is not None:
                self._sent_samples += len(self.pending.samples)
                self._sent_batches += 1
            self.pending = None

    def failed(self, code: grpc.StatusCode, details: str, now_s: float) -> bool:
        """Record a failed send; True if the batch should be retried (it stays pending)."""
        with self._lock:
            batch = self.pending
            self._last_error = f"{code.name}: {details}"
            if batch is None:
                return False
            batch.attempts += 1
            if code not in RETRYABLE:
                self._rejected += len(batch.samples)
                self.pending = None
                return False
            if now_s - batch.first_try_s > self.max_retry_s:
                self._expired += len(batch.samples)
                self.pending = None
                return False
            self._retries += 1
            return True

    def stats(self) -> SdkStats:
        with self._lock:
            return SdkStats(
                buffered=len(self._samples) + (len(self.pending.samples) if self.pending else 0),
                sent_samples=self._sent_samples,
                sent_batches=self._sent_batches,
                dropped_overflow=self._overflow,
                dropped_rejected=self._rejected,
                dropped_expired=self._expired,
                dropped_invalid=self._invalid,
                retries=self._retries,
                last_error=self._last_error,
            )
