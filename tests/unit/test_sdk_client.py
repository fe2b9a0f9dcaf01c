"""Both SDK clients against in-process fake services over real gRPC (port 0): batching, retries under
one batch id, never blocking while the control plane is down, flush on close, decisions."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from opscale.api.decision.v1 import decision_pb2, decision_pb2_grpc
from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.api.ingest.v1 import ingest_pb2_grpc
from opscale.sdk import AsyncOpscaleClient, OpscaleClient, SdkStats

Ctx = grpc.aio.ServicerContext[Any, Any]


@dataclass
class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    """Counts batches once per id, like the real service; ``fail`` codes are answered first."""

    fail: list[grpc.StatusCode] = field(default_factory=list)
    calls: list[pb.PushSamplesRequest] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)

    async def PushSamples(
        self,
        request: pb.PushSamplesRequest,
        context: Ctx,
    ) -> pb.PushSamplesResponse:
        self.calls.append(request)
        if self.fail:
            await context.abort(self.fail.pop(0), "injected")
        duplicate = request.batch_id in self.applied
        self.applied.setdefault(request.batch_id, len(request.samples))
        return pb.PushSamplesResponse(
            accepted_samples=0 if duplicate else len(request.samples), duplicate=duplicate
        )

    @property
    def samples(self) -> int:
        return sum(self.applied.values())


@dataclass
class FakeDecisions(decision_pb2_grpc.DecisionServiceServicer):
    watches: list[decision_pb2.WatchDecisionsRequest] = field(default_factory=list)

    async def GetDecision(
        self,
        request: decision_pb2.GetDecisionRequest,
        context: Ctx,
    ) -> decision_pb2.GetDecisionResponse:
        return decision_pb2.GetDecisionResponse(
            decision=decision_pb2.Decision(id="d-1", deployment=request.deployment)
        )

    async def WatchDecisions(
        self,
        request: decision_pb2.WatchDecisionsRequest,
        context: Ctx,
    ) -> AsyncIterator[decision_pb2.WatchDecisionsResponse]:
        self.watches.append(
            decision_pb2.WatchDecisionsRequest(
                deployments=request.deployments, include_current=request.include_current
            )
        )
        if len(self.watches) == 1:  # first connection: one decision, then the replica goes away
            yield decision_pb2.WatchDecisionsResponse(decision=decision_pb2.Decision(id="w-1"))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "leader moved")
        for i in (2, 3):
            yield decision_pb2.WatchDecisionsResponse(decision=decision_pb2.Decision(id=f"w-{i}"))


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, FakeIngest, FakeDecisions]]:
    ingest, decisions = FakeIngest(), FakeDecisions()
    server = grpc.aio.server()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server)
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(decisions, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", ingest, decisions
    await server.stop(None)


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_async_client_batches_and_flushes(fake: tuple[str, FakeIngest, FakeDecisions]) -> None:
    address, ingest, _ = fake
    async with AsyncOpscaleClient(
        address, deployment="llama", batch_size=500, flush_interval_s=0.05
    ) as client:
        for i in range(1200):
            client.record_arrival(100 + i, 10)
        # Two full batches go at once; the remaining 200 within a flush interval.
        # The server counts a batch before its reply reaches the client: wait for both.
        await eventually(lambda: ingest.samples == 1200 and client.stats().sent_samples == 1200)
        assert sorted(len(c.samples) for c in ingest.calls) == [200, 500, 500]
        assert client.stats().sent_samples == 1200 and client.stats().buffered == 0


async def test_retries_reuse_the_batch_id(fake: tuple[str, FakeIngest, FakeDecisions]) -> None:
    address, ingest, _ = fake
    ingest.fail = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    client = AsyncOpscaleClient(address, deployment="llama", batch_size=10)
    client._backoff.base_s = 0.001  # keep the test fast
    for _ in range(10):
        client.record_ttft(50.0)
    client.start()
    await eventually(lambda: ingest.samples == 10 and client.stats().sent_samples == 10)
    assert len(ingest.calls) == 3 and len({c.batch_id for c in ingest.calls}) == 1
    stats = client.stats()
    assert (stats.retries, stats.sent_samples, stats.last_error) == (2, 10, "UNAVAILABLE: injected")
    ingest.fail = [grpc.StatusCode.INVALID_ARGUMENT]
    for _ in range(10):
        client.record_ttft(50.0)
    await eventually(lambda: client.stats().dropped_rejected == 10)
    await client.close()


async def test_a_down_control_plane_never_blocks_the_serving_path() -> None:
    client = AsyncOpscaleClient(dead_address(), deployment="llama", batch_size=100, max_buffered=1000)
    client._backoff.base_s = 0.001
    client.start()
    started = time.perf_counter()
    for _ in range(20_000):
        client.record_tbt(12.0)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"20k record calls took {elapsed:.2f} s"
    loop = asyncio.get_running_loop()
    tick = loop.time()
    await asyncio.sleep(0.05)  # the loop stays responsive while the sender retries
    assert loop.time() - tick < 0.5
    stats = client.stats()
    assert stats.buffered <= 1000 + 100  # the buffer, plus the one batch being retried
    assert stats.dropped_overflow >= 20_000 - 1100 and stats.sent_samples == 0
    await client.close(flush_timeout_s=0.1)
    assert (client.stats().last_error or "").startswith("UNAVAILABLE")


async def test_close_sends_what_is_left(fake: tuple[str, FakeIngest, FakeDecisions]) -> None:
    address, ingest, _ = fake
    client = AsyncOpscaleClient(address, deployment="llama", batch_size=500, flush_interval_s=60)
    client.start()
    client.record_gpu(0.5, 400.0)
    await client.close()
    assert ingest.samples == 1


async def test_decisions_get_and_watch_across_a_reconnect(
    fake: tuple[str, FakeIngest, FakeDecisions],
) -> None:
    address, _, decisions = fake
    async with AsyncOpscaleClient(address, deployment="llama", decision_address=address) as client:
        client._backoff.base_s = 0.001
        assert (await client.get_decision()).deployment == "llama"
        seen = [d.id async for d in client.watch_decisions(["llama"], include_current=False)]
    assert seen == ["w-1", "w-2", "w-3"]
    # The reconnect asked for the current decisions again, so nothing made meanwhile is missed.
    assert [w.include_current for w in decisions.watches] == [False, True]
    with pytest.raises(ValueError, match="decision_address"):
        await AsyncOpscaleClient(address).get_decision("x")


async def test_sync_client(fake: tuple[str, FakeIngest, FakeDecisions]) -> None:
    address, ingest, _ = fake

    def use() -> tuple[str, list[str]]:
        with OpscaleClient(
            address, deployment="llama", decision_address=address, batch_size=50, flush_interval_s=0.05
        ) as c:
            c._backoff.base_s = 0.001
            for _ in range(120):
                c.record_queue("decode", 4, 1, 0.3)
            decision = c.get_decision().deployment
            watched = []
            for d in c.watch_decisions(["llama"]):
                watched.append(d.id)
        return decision, watched

    decision, watched = await asyncio.to_thread(use)
    assert decision == "llama" and watched[-2:] == ["w-2", "w-3"]
    assert ingest.samples == 120  # close() sent the partial batch


async def test_sync_client_with_the_control_plane_down() -> None:
    def use() -> tuple[float, SdkStats]:
        c = OpscaleClient(dead_address(), deployment="llama", batch_size=100, max_buffered=500)
        started = time.perf_counter()
        for _ in range(10_000):
            c.record_ttft(80.0)
        elapsed = time.perf_counter() - started
        c.close(flush_timeout_s=0.1)
        return elapsed, c.stats()

    elapsed, stats = await asyncio.to_thread(use)
    assert elapsed < 1.0
    assert stats.buffered <= 600 and stats.dropped_overflow >= 10_000 - 600
