"""The scrape adapter against a local HTTP server serving the engines' fixture text, writing through
the real ingest path into both store pairs. Expected numbers derive from the fixture deltas in
tests/fixtures/metrics/README.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.config import ScrapeTarget
from opscale.signals import TTFT_LAYOUT
from tests.component.conftest import IngestStack, StartIngest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
T = 1_700_000_000.0


@dataclass
class Engine:
    """A stand-in engine: serves ``body`` at /metrics, or 503 when ``body`` is None."""

    body: str | None = None
    url: str = ""
    requests: int = 0

    def serve(self, fixture: str | None) -> None:
        self.body = None if fixture is None else (FIXTURES / fixture).read_text()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    state = Engine()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        state.requests += 1
        if state.body is None:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        else:
            body = state.body.encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def scraping(
    start_ingest: StartIngest, engine: Engine, role: str, deployment: str = "llama"
) -> IngestStack:
    target = ScrapeTarget.model_validate({"url": engine.url, "deployment": deployment, "role": role})
    stack = await start_ingest([target])
    await stack.create_deployment("llama")
    return stack


async def summary(stack: IngestStack, window_s: float) -> pb.WindowSummary:
    request = pb.GetWindowSummaryRequest(deployment="llama", window_s=window_s)
    reply: pb.GetWindowSummaryResponse = await stack.stub.GetWindowSummary(request, timeout=10)
    return reply.summary


async def test_vllm_scrapes_become_the_window(start_ingest: StartIngest, engine: Engine) -> None:
    stack = await scraping(start_ingest, engine, "serving")
    (loop,) = stack.ingest.loops
    engine.serve("vllm_v0.10_t0.txt")
    assert await loop.scrape_once()  # T: the baseline (a queue sample only)
    stack.clock.set(T + 2)
    engine.serve("vllm_v0.10_t1.txt")
    assert await loop.scrape_once()  # T + 2: rates over the 2 s since
    stack.clock.set(T + 3)
    w = await summary(stack, 3)  # buckets T, T + 1, T + 2

    assert w.arrivals == 5 and w.arrivals_per_s == pytest.approx(5 / 3)  # 5 finished requests
    # 2,400 generation tokens over [T, T + 2]; prefill (6,000 prompt - 2,000 cached) / 2 s, same span.
    assert w.decode_tokens_per_s == pytest.approx(2400 / 3)
    assert w.prefill_tokens_per_s == pytest.approx(4000 / 3)
    # Prompt lengths 750 x2, 1500 x2, 3500 x1 (bucket midpoints): mean 1600.
    assert w.input_tokens_mean == pytest.approx(1600.0)
    assert w.cached_input_fraction == pytest.approx((250 * 2 + 500 + 500 + 1167) / 8000)
    # TTFT 175 ms x2, 375 ms x2, 625 ms x1: p50 (rank 2.5) is half way into 375's two, within its bin
    # (the quantile narrows the bin only at the ends of the data, and 375 is neither).
    lo, hi = TTFT_LAYOUT.bin_range(TTFT_LAYOUT.bin_of(375.0))
    assert w.ttft_samples == 5 and w.ttft_ms_p50 == pytest.approx(lo + (hi - lo) * 0.5 / 2)
    assert w.tbt_samples == 2395 and w.e2e_samples == 5
    (pool,) = w.pools
    # Two queue samples: (12 running, 3 waiting, 0.42) at T and (14, 5, 0.5) at T + 2.
    assert (pool.queue_running_mean, pool.queue_waiting_mean) == (13.0, 4.0)
    assert pool.kv_cache_usage_fraction == pytest.approx(0.46)
    health = loop.health
    assert (health.consecutive_failures, health.last_success_s, health.missing_metrics) == (0, T + 2, ())


async def test_sglang_counter_reset(start_ingest: StartIngest, engine: Engine) -> None:
    stack = await scraping(start_ingest, engine, "decode")
    (loop,) = stack.ingest.loops
    engine.serve("sglang_v0.4_t1.txt")
    assert await loop.scrape_once()
    stack.clock.set(T + 2)
    engine.serve("sglang_v0.4_restarted.txt")  # the engine restarted: counters near zero
    assert await loop.scrape_once()
    stack.clock.set(T + 3)
    w = await summary(stack, 3)
    # Since the restart: 1 request of 1,000 prompt and 300 generation tokens. A decode target reports
    # decode tokens only: 300 over [T, T + 2], read over 3 s.
    assert (w.arrivals, w.input_tokens_mean, w.output_tokens_mean) == (1, 1000.0, 300.0)
    assert w.decode_tokens_per_s == pytest.approx(100.0) and w.prefill_tokens_per_s == 0.0
    assert w.tbt_samples == 299  # not 299 minus the 797,000 seen before the restart
    labels = {"target": engine.url, "deployment": "llama", "role": "decode"}
    assert (
        stack.runtime.telemetry.registry.get_sample_value(
            "opscale_ingest_scrape_counter_resets_total", labels
        )
        == 1
    )


async def test_an_unreachable_target_goes_stale_not_zero(start_ingest: StartIngest, engine: Engine) -> None:
    stack = await scraping(start_ingest, engine, "serving")
    (loop,) = stack.ingest.loops
    engine.serve("vllm_v0.10_t0.txt")
    assert await loop.scrape_once()
    stack.clock.set(T + 2)
    engine.serve("vllm_v0.10_t1.txt")
    assert await loop.scrape_once()
    stack.clock.set(T + 3)
    before = await summary(stack, 3)
    assert before.arrivals == 5

    engine.serve(None)  # the engine answers 503 from now on
    for second in (3, 4, 5):
        stack.clock.set(T + second)
        assert not await loop.scrape_once()
    health = loop.health
    assert health.consecutive_failures == 3 and health.last_success_s == T + 2
    assert health.last_error == "HTTP 503 Service Unavailable"
    stack.clock.set(T + 6)
    w = await summary(stack, 6)
    # Nothing was written for the failed scrapes: the same totals, now spread over a longer window,
    # and the queue signal 4 s old rather than a fresh zero.
    assert w.arrivals == before.arrivals and w.pools[0].queue_running_mean == 13.0
    stale = {s.signal: s.staleness_s for s in w.staleness}
    assert stale["queue"] == pytest.approx(4.0) and stale["decode_tokens"] == pytest.approx(4.0)
    metric = stack.runtime.telemetry.registry.get_sample_value
    labels = {"target": engine.url, "deployment": "llama", "role": "serving"}
    assert metric("opscale_ingest_scrape_up", labels) == 0
    assert metric("opscale_ingest_scrape_consecutive_failures", labels) == 3
    assert metric("opscale_ingest_scrapes_total", {**labels, "outcome": "error"}) == 3
    assert metric("opscale_ingest_scrape_last_success_timestamp_seconds", labels) == T + 2

    engine.serve("vllm_v0.10_t1.txt")  # back, unchanged: rates over the 4 s gap are zero
    assert await loop.scrape_once() and loop.health.consecutive_failures == 0


async def test_a_target_for_an_unknown_deployment_reports_it(
    start_ingest: StartIngest, engine: Engine
) -> None:
    stack = await scraping(start_ingest, engine, "decode", deployment="ghost")
    (loop,) = stack.ingest.loops
    engine.serve("vllm_v0.10_t0.txt")
    assert not await loop.scrape_once()
    assert loop.health.last_error == "samples[0].deployment: deployment 'ghost' not found"


async def test_the_loop_runs_until_stopped(start_ingest: StartIngest, engine: Engine) -> None:
    target = ScrapeTarget.model_validate(
        {"url": engine.url, "deployment": "llama", "role": "decode", "interval_s": 0.02}
    )
    stack = await start_ingest([target])
    await stack.create_deployment("llama")
    engine.serve("vllm_v0.10_t0.txt")
    stopping = asyncio.Event()
    task = asyncio.create_task(stack.ingest.loops[0].run(stopping))
    while engine.requests < 3:
        await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(task, 2)
    assert stack.ingest.loops[0].health.last_success_s is not None
