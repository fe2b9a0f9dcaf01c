"""A minimal asyncio HTTP/1.1 GET for scraping ``/metrics``: one request per connection, bounded time
and size, plain or TLS.

Why not a client library: none is a dependency (httpx/aiohttp are not installed), and urllib in a
thread cannot be cancelled when a target hangs. A scrape needs little — GET, a status line, headers,
a body by Content-Length, chunked transfer or until close — and a hard overall timeout, which
``asyncio.timeout`` gives here across connect, send and receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

MAX_BODY_BYTES = 16 * 1024 * 1024  # vLLM's /metrics is ~50-200 KB; anything near this is not metrics


class FetchError(Exception):
    """The target could not be reached or did not answer 200 with a body; the message says which."""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readline()
        try:
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            raise FetchError(f"malformed chunk size line {line[:40]!r}") from None
        if size == 0:
            while (await reader.readline()).strip():  # trailers, then the blank line
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise FetchError(f"body larger than {MAX_BODY_BYTES} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF after each chunk


async def _exchange(url: str) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    context = ssl.create_default_context() if tls else None
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    except OSError as exc:
        raise FetchError(f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}") from None
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: opscale-ingest\r\n"
            "Accept: text/plain;version=0.0.4\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")  # the reader's 64 KiB limit bounds the headers
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/"):
            raise FetchError(f"not an HTTP response: {status_line[:60]!r}")
        if fields[1] != "200":
            raise FetchError(f"HTTP {' '.join(fields[1:])}")
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise FetchError(f"unsupported content-encoding {headers['content-encoding']!r}")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader)
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY_BYTES:
                raise FetchError(f"body larger than {MAX_BODY_BYTES} bytes")
            return await reader.readexactly(length)
        body = bytearray()  # neither length nor chunked: the body runs to the end of the connection
        while chunk := await reader.read(65536):
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise FetchError(f"body larger than {MAX_BODY_BYTES} bytes")
        return bytes(body)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise FetchError(f"malformed or truncated response ({type(exc).__name__})") from None
    except OSError as exc:
        raise FetchError(f"connection error: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def http_get(url: str, timeout_s: float) -> str:
    """The body of ``GET url`` as text; ``FetchError`` on any failure, including taking longer than
    ``timeout_s`` in all."""
    try:
        async with asyncio.timeout(timeout_s):
            body = await _exchange(url)
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout_s:g} s") from None
    return body.decode("utf-8", errors="replace")
