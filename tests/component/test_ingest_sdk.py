"""The SDK against the real ingest service: what a serving framework records is what the window reads."""

from __future__ import annotations

import pytest

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.sdk import AsyncOpscaleClient
from tests.component.conftest import StartIngest

T = 1_700_000_000.0


async def test_sdk_pushes_into_the_window(start_ingest: StartIngest) -> None:
    stack = await start_ingest()
    await stack.create_deployment("llama")
    client = AsyncOpscaleClient(
        stack.address, deployment="llama", instance="d-0", clock=stack.clock.now, batch_size=100
    )
    for i in range(250):  # 250 requests and TTFTs over [T, T + 5)
        stack.clock.set(T + i * 0.02)
        client.record_arrival(2000, 100, cached_input_tokens=500)
        client.record_ttft(120.0)
    client.record_queue("decode", running=6, waiting=2, kv_cache_usage_fraction=0.4)
    assert client.record_ttft(float("nan")) is False  # refused locally, counted, never sent
    assert await client.flush()
    await client.close()
    stats = client.stats()
    assert (stats.sent_samples, stats.dropped_invalid, stats.dropped_rejected) == (501, 1, 0)

    stack.clock.set(T + 5)
    reply = await stack.stub.GetWindowSummary(
        pb.GetWindowSummaryRequest(deployment="llama", window_s=5), timeout=10
    )
    w = reply.summary
    assert (w.arrivals, w.arrivals_per_s) == (250, 50.0)  # 250 in 5 s
    assert (w.ttft_samples, w.ttft_ms_p50, w.ttft_ms_p99) == (250, 120.0, 120.0)  # one value: exact
    assert w.cached_input_fraction == pytest.approx(0.25)
    assert w.pools[0].queue_waiting_mean == 2.0
