"""The reference operator worker: holds its GPU slot, executes batches with profiled service times,
drains on request. A router drives it through ``WorkerService``; the node agent probes its port for
readiness and calls ``Drain`` for two-phase scale-in.

Service time comes from the same performance model the policies plan with (``opscale.model``), so a
demo or test that routes load through real worker processes sees the latencies the planner predicted.
Without a model it falls back to a fixed cost per token, so the worker also runs for unknown shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from opscale.api.worker.v1 import worker_pb2 as wpb
from opscale.api.worker.v1 import worker_pb2_grpc
from opscale.clock import Clock, SystemClock
from opscale.errors import FailedPrecondition, InvalidArgument

FALLBACK_MS_PER_TOKEN = 0.05
MAX_BATCH = 65_536
MAX_LENGTH = 1_048_576


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    replica_id: str
    deployment: str
    stage: str
    operator: str
    gpu_indices: tuple[int, ...]


def service_time_fn(
    model: str, gpu_type: str, stage: str, operator: str, gpus: float
) -> Callable[[int, int], float]:
    """(batch, length) -> ms for one pass of this worker's operator (all its layers); ``gpus`` below 1 is
    a share of one GPU."""
    if model:
        from opscale.model import get_preset, perf_model

        perf = perf_model(get_preset(model), gpu_type or "H100")
        perf_stage = "decode" if stage == "serving" else stage
        kinds = [op.kind for op in perf.operators(perf_stage)] if operator == "model" else [operator]

        def modelled(batch: int, length: int) -> float:
            return sum(perf.pass_latency_ms(perf_stage, k, batch, length, gpus) for k in kinds)

        modelled(1, 1)  # fail at start-up, not on the first batch, if the operator does not exist
        return modelled

    def fallback(batch: int, length: int) -> float:
        return FALLBACK_MS_PER_TOKEN * batch * (length if stage == "prefill" else 1)

    return fallback


class Worker:
    """Transport-free worker state: one batch at a time on its GPU slot, draining, counters."""

    def __init__(
        self, identity: WorkerIdentity, service_ms: Callable[[int, int], float], clock: Clock | None = None
    ) -> None:
        self.identity = identity
        self._service_ms = service_ms
        self._clock = clock or SystemClock()
        self._slot = asyncio.Lock()  # the GPU executes one batch at a time
        self.in_flight = 0
        self.batches_done = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def state(self) -> wpb.WorkerState:
        if not self.draining:
            return wpb.WORKER_STATE_READY
        return wpb.WORKER_STATE_DRAINED if self.in_flight == 0 else wpb.WORKER_STATE_DRAINING

    async def execute(self, batch: int, length: int) -> tuple[float, float]:
        if self.draining:
            raise FailedPrecondition(
                f"replica {self.identity.replica_id} is draining and takes no new batches; route elsewhere",
                field="replica",
            )
        if not 1 <= batch <= MAX_BATCH:
            raise InvalidArgument(f"batch_size: must be in [1, {MAX_BATCH}], got {batch}", field="batch_size")
        if not 1 <= length <= MAX_LENGTH:
            raise InvalidArgument(
                f"length_tokens: must be in [1, {MAX_LENGTH}], got {length}", field="length_tokens"
            )
        service_ms = self._service_ms(batch, length)
        self.in_flight += 1
        self.idle.clear()
        arrived = self._clock.monotonic()
        try:
            async with self._slot:
                queued_ms = (self._clock.monotonic() - arrived) * 1000
                await self._clock.sleep(service_ms / 1000)
                self.batches_done += 1
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()
        return service_ms, queued_ms

    async def drain(self, grace_s: float) -> None:
        """Leave routing at once; in-flight batches finish (waited for up to ``grace_s``)."""
        self.draining = True
        if grace_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), timeout=grace_s)


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def ExecuteBatch(self, request: wpb.ExecuteBatchRequest, context: Any) -> wpb.ExecuteBatchResponse:
        service_ms, queued_ms = await self._worker.execute(request.batch_size, request.length_tokens or 1)
        return wpb.ExecuteBatchResponse(
            request_id=request.request_id,
            replica_id=self._worker.identity.replica_id,
            service_time_ms=service_ms,
            queued_ms=queued_ms,
        )

    async def Drain(self, request: wpb.DrainRequest, context: Any) -> wpb.DrainResponse:
        if request.grace_s < 0:
            raise InvalidArgument(f"grace_s: must be >= 0, got {request.grace_s}", field="grace_s")
        # Answer at once; the agent polls GetStatus until DRAINED (a long-held RPC would hide progress).
        self._worker.draining = True
        return wpb.DrainResponse(state=self._worker.state, in_flight=self._worker.in_flight)

    async def GetStatus(self, request: wpb.GetStatusRequest, context: Any) -> wpb.GetStatusResponse:
        w, ident = self._worker, self._worker.identity
        return wpb.GetStatusResponse(
            replica_id=ident.replica_id,
            deployment=ident.deployment,
            stage=ident.stage,
            operator=ident.operator,
            state=w.state,
            in_flight=w.in_flight,
            batches_done=w.batches_done,
            gpu_indices=list(ident.gpu_indices),
            pid=os.getpid(),
        )


def parse_visible_devices(value: str) -> tuple[int, ...]:
    """CUDA_VISIBLE_DEVICES as the agent sets it ("0,3"); UUIDs or junk give no indices."""
    out = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if not part.isdigit():
            return ()
        out.append(int(part))
    return tuple(out)


def register(server: grpc.aio.Server, worker: Worker) -> None:
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(worker), server)
