"""The reference worker: profiled service times, one batch at a time, draining, bad input."""

from __future__ import annotations

import asyncio

import pytest

from opscale.api.worker.v1 import worker_pb2 as wpb
from opscale.clock import SystemClock
from opscale.errors import FailedPrecondition, InvalidArgument
from opscale.model import get_preset, perf_model
from opscale.worker.service import (
    FALLBACK_MS_PER_TOKEN,
    Worker,
    WorkerIdentity,
    parse_visible_devices,
    service_time_fn,
)

IDENTITY = WorkerIdentity("r1", "d", "decode", "attention", (0,))


def test_service_time_is_the_performance_model() -> None:
    fn = service_time_fn("llama3-8b", "H100", "decode", "attention", 1)
    perf = perf_model(get_preset("llama3-8b"), "H100")
    assert fn(16, 2048) == pytest.approx(perf.pass_latency_ms("decode", "attention", 16, 2048, 1))
    # A whole-model worker of a colocated (serving) pool costs every decode operator.
    whole = service_time_fn("llama3-8b", "H100", "serving", "model", 1)(16, 2048)
    parts = sum(perf.pass_latency_ms("decode", op.kind, 16, 2048, 1) for op in perf.operators("decode"))
    assert whole == pytest.approx(parts)
    # Without a model: a fixed cost per token (prefill: batch x length tokens; decode: batch).
    assert service_time_fn("", "H100", "prefill", "ffn", 1)(2, 100) == pytest.approx(
        200 * FALLBACK_MS_PER_TOKEN
    )
    with pytest.raises(InvalidArgument):
        service_time_fn("llama3-8b", "H100", "decode", "experts", 1)  # a dense model has no experts


async def test_batches_queue_for_the_slot_and_drain_waits_for_them() -> None:
    worker = Worker(IDENTITY, lambda batch, length: 50.0, SystemClock())
    first = asyncio.create_task(worker.execute(4, 10))
    second = asyncio.create_task(worker.execute(4, 10))
    await asyncio.sleep(0.01)
    assert worker.in_flight == 2
    drain = asyncio.create_task(worker.drain(grace_s=5))
    await asyncio.sleep(0.01)
    assert worker.state == wpb.WORKER_STATE_DRAINING
    with pytest.raises(FailedPrecondition, match="draining"):
        await worker.execute(1, 1)
    (ms1, queued1), (ms2, queued2) = await first, await second
    await drain
    assert ms1 == ms2 == 50.0 and queued1 < 10 and queued2 >= 40  # the second waited for the first
    assert worker.state == wpb.WORKER_STATE_DRAINED and worker.batches_done == 2


async def test_bad_batches() -> None:
    worker = Worker(IDENTITY, lambda batch, length: 1.0)
    for batch, length in [(0, 1), (1, 0), (10**6, 1)]:
        with pytest.raises(InvalidArgument):
            await worker.execute(batch, length)


def test_visible_devices() -> None:
    assert parse_visible_devices("0,3") == (0, 3)
    assert parse_visible_devices("") == ()
    assert parse_visible_devices("GPU-1234") == ()
