"""The ``record_*`` calls a serving framework makes on its hot path (shared by both clients).

Each builds one ``Sample``, stamps it with the client's clock and appends it to the bounded buffer;
none touches the network or waits. A value the control plane would refuse (NaN, infinite, negative,
a fraction above 1) is dropped and counted here instead of costing its whole batch later. A stage or
operator name that does not exist is a programming error and raises ``ValueError`` at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.pools import OperatorKind, PoolKey, Stage
from opscale.sdk.buffer import SampleBuffer
from opscale.wire.pools import pool_to_pb

STAGES = tuple(s.value for s in Stage)
OPERATORS = tuple(o.value for o in OperatorKind)


def _ok(*values: float, top: float = math.inf) -> bool:
    return all(math.isfinite(v) and 0 <= v <= top for v in values)


def pool_key(stage: str, operator: str = "model") -> cpb.PoolKey:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, got {operator!r}")
    return pool_to_pb(PoolKey(stage, operator))


class Recorder:
    def __init__(
        self, buffer: SampleBuffer, deployment: str, instance: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._buffer = buffer
        self._deployment = deployment
        self._instance = instance
        self._clock = clock

    def _wake(self) -> None:
        """Called when a full batch is waiting; the client wakes its sender."""

    def record(self, sample: pb.Sample) -> None:
        """Queue a ready-made sample (deployment and timestamp filled in if empty)."""
        if not sample.deployment:
            sample.deployment = self._deployment
        if not sample.instance:
            sample.instance = self._instance
        if not sample.timestamp_ms:
            sample.timestamp_ms = round(self._clock() * 1000)
        if self._buffer.append(sample):
            self._wake()

    def _sample(
        self, deployment: str | None, at_s: float | None, pool: cpb.PoolKey | None = None
    ) -> pb.Sample:
        return pb.Sample(
            deployment=deployment or self._deployment,
            instance=self._instance,
            timestamp_ms=round((self._clock() if at_s is None else at_s) * 1000),
            pool=pool,
        )

    def _refuse(self) -> bool:
        self._buffer.invalid()
        return False

    def record_arrival(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        count: int = 1,
        deployment: str | None = None,
        at_s: float | None = None,
    ) -> bool:
        if not (0 <= cached_input_tokens <= input_tokens and output_tokens >= 0 and count >= 1):
            return self._refuse()
        s = self._sample(deployment, at_s)
        s.arrival.input_tokens, s.arrival.output_tokens = input_tokens, output_tokens
        s.arrival.cached_input_tokens, s.arrival.count = cached_input_tokens, count
        self.record(s)
        return True

    def _latency(self, field: str, ms: float, count: int, deployment: str | None, at_s: float | None) -> bool:
        if not _ok(ms) or count < 1:
            return self._refuse()
        s = self._sample(deployment, at_s)
        setattr(s.latency, field, ms)
        s.latency.count = count
        self.record(s)
        return True

    def record_ttft(
        self, ms: float, *, count: int = 1, deployment: str | None = None, at_s: float | None = None
    ) -> bool:
        return self._latency("ttft_ms", ms, count, deployment, at_s)

    def record_tbt(
        self, ms: float, *, count: int = 1, deployment: str | None = None, at_s: float | None = None
    ) -> bool:
        return self._latency("tbt_ms", ms, count, deployment, at_s)

    def record_e2e(
        self, ms: float, *, count: int = 1, deployment: str | None = None, at_s: float | None = None
    ) -> bool:
        return self._latency("e2e_ms", ms, count, deployment, at_s)

    def record_queue(
        self,
        stage: str,
        running: int,
        waiting: int,
        kv_cache_usage_fraction: float,
        *,
        operator: str = "model",
        deployment: str | None = None,
        at_s: float | None = None,
    ) -> bool:
        pool = pool_key(stage, operator)
        if running < 0 or waiting < 0 or not _ok(kv_cache_usage_fraction, top=1.0):
            return self._refuse()
        s = self._sample(deployment, at_s, pool)
        s.queue.running_requests, s.queue.waiting_requests = running, waiting
        s.queue.kv_cache_usage_fraction = kv_cache_usage_fraction
        self.record(s)
        return True

    def record_throughput(
        self,
        stage: str,
        decode_tokens_per_s: float,
        prefill_tokens_per_s: float,
        interval_s: float,
        *,
        operator: str = "model",
        deployment: str | None = None,
        at_s: float | None = None,
    ) -> bool:
        pool = pool_key(stage, operator)
        if not _ok(decode_tokens_per_s, prefill_tokens_per_s) or not (
            _ok(interval_s, top=60.0) and interval_s > 0
        ):
            return self._refuse()
        s = self._sample(deployment, at_s, pool)
        s.throughput.decode_tokens_per_s, s.throughput.prefill_tokens_per_s = (
            decode_tokens_per_s,
            prefill_tokens_per_s,
        )
        s.throughput.interval_s = interval_s
        self.record(s)
        return True

    def record_busy(
        self,
        stage: str,
        operator: str,
        busy_s: float,
        interval_s: float,
        batch_size: int,
        *,
        deployment: str | None = None,
        at_s: float | None = None,
    ) -> bool:
        pool = pool_key(stage, operator)
        if not (_ok(interval_s) and interval_s > 0 and _ok(busy_s, top=interval_s) and batch_size >= 0):
            return self._refuse()
        s = self._sample(deployment, at_s, pool)
        s.busy.busy_s, s.busy.interval_s, s.busy.batch_size = busy_s, interval_s, batch_size
        self.record(s)
        return True

    def record_gpu(
        self,
        utilization_fraction: float,
        power_watts: float,
        *,
        index: int = 0,
        uuid: str = "",
        deployment: str | None = None,
        at_s: float | None = None,
    ) -> bool:
        if not (_ok(utilization_fraction, top=1.0) and _ok(power_watts)):
            return self._refuse()
        s = self._sample(deployment, at_s)
        s.gpu.utilization_fraction, s.gpu.power_watts, s.gpu.index, s.gpu.uuid = (
            utilization_fraction,
            power_watts,
            index,
            uuid,
        )
        self.record(s)
        return True
