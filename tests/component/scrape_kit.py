"""Shared by the scrape component tests: a stand-in engine endpoint serving simulated /metrics, and
reading a window back as ``check.Observed``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from opscale.services.ingest.app import WindowQuery
from opscale.signals import WindowSummary
from tests.component.conftest import IngestStack
from tests.fixtures.metrics.check import Observed


@dataclass
class Endpoint:
    """Serves ``body`` (or ``render()``, called per request) at any path; 503 when both are None."""

    body: str | None = None
    render: Callable[[], str] | None = None
    url: str = ""
    requests: int = 0
    paths: list[str] = field(default_factory=list)


async def serve_endpoint() -> AsyncIterator[Endpoint]:
    state = Endpoint()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        state.requests += 1
        state.paths.append(head.split(b" ", 2)[1].decode())
        text = state.render() if state.render is not None else state.body
        if text is None:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        else:
            body = text.encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
        try:
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async for e in serve_endpoint():
        yield e


async def window(stack: IngestStack, deployment: str, start_s: float, end_s: float) -> WindowSummary:
    """The deployment's window over [start_s, end_s) (whole seconds), read at end_s."""
    stack.clock.set(end_s)
    return await stack.ingest.app.window_summary(WindowQuery(deployment, end_s - start_s))


def observed(w: WindowSummary) -> Observed:
    return Observed(
        arrivals=w.arrivals,
        prompt_mean=w.input_tokens.mean,
        output_mean=w.output_tokens.mean,
        decode_tokens=w.decode_tokens_per_s * w.window_s,
        prefill_tokens=w.prefill_tokens_per_s * w.window_s,
        latency={
            name: (d.count, d.mean, d.p50, d.p90)
            for name, d in (("ttft", w.ttft_ms), ("tbt", w.tbt_ms), ("e2e", w.e2e_ms))
        },
    )
