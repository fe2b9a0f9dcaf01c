"""The scraper's HTTP GET against a local asyncio server: body framings, errors, an overall timeout."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from opscale.services.ingest.http_fetch import MAX_BODY_BYTES, FetchError, http_get

Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Reply], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            try:
                await reply(writer)
            finally:
                writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/metrics"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def raw(data: bytes) -> Reply:
    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return reply


BODY = "vllm:num_requests_running 3\n"


@pytest.mark.parametrize(
    "response",
    [
        f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(BODY)}\r\n\r\n{BODY}".encode(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nvllm:\r\n17;ext=1\r\nnum_requests_running 3\n\r\n0\r\n\r\n",
        f"HTTP/1.0 200 OK\r\n\r\n{BODY}".encode(),  # no length: the body runs to the close
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_body_framings(server: Callable[[Reply], Awaitable[str]], response: bytes) -> None:
    assert await http_get(await server(raw(response)), 2.0) == BODY


async def test_errors_are_fetch_errors(server: Callable[[Reply], Awaitable[str]]) -> None:
    with pytest.raises(FetchError, match="HTTP 404 Not Found"):
        await http_get(await server(raw(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")), 2.0)
    with pytest.raises(FetchError, match="truncated"):
        await http_get(await server(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")), 2.0)
    with pytest.raises(FetchError, match="larger than"):
        big = f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        await http_get(await server(raw(big)), 2.0)
    with pytest.raises(FetchError, match="content-encoding"):
        await http_get(await server(raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nx")), 2.0)
    with pytest.raises(FetchError, match="not an HTTP response"):
        await http_get(await server(raw(b"SSH-2.0-OpenSSH\r\n\r\n")), 2.0)


async def test_a_hanging_target_times_out(server: Callable[[Reply], Awaitable[str]]) -> None:
    async def hang(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.sleep(5)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(FetchError, match=r"within 0\.2 s"):
        await http_get(await server(hang), 0.2)
    assert loop.time() - started < 1.0


async def test_nothing_listening() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match="cannot connect"):
        await http_get(f"http://127.0.0.1:{port}/metrics", 2.0)
    with pytest.raises(FetchError, match="not an http"):
        await http_get("file:///etc/passwd", 2.0)
