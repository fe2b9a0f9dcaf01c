"""aiosqlite connections whose ``close()`` cannot wait forever.

SQLAlchemy closes a connection whose operation was cancelled (a gRPC stream the client cancelled, a
task stopped on shutdown) by ``terminate()``: a graceful ``close()`` in a shielded task, and, if the
caller is cancelled again meanwhile, ``stop()`` at once. aiosqlite 0.22's ``close()`` ends with its own
``stop()`` and awaits that; when the forced ``stop()`` already ran, the worker thread has taken the first
stop marker and exited, so the second marker is never taken and ``close()`` waits for ever. Seen as a
hung ``asyncio`` shutdown (``_cancel_all_tasks``) after an agent stream was cancelled mid-query; the same
hang was reported against aiosqlite 0.22 + SQLAlchemy by other projects.

The fix is one rule: a connection asked to stop twice queues one stop marker, not two, and the second
caller waits for the first marker to be taken (it closes the SQLite handle and ends the thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiosqlite

# aiosqlite.connect's default: rows fetched per round trip to the worker thread when iterating a cursor.
_ITER_CHUNK_SIZE = 64


class _Connection(aiosqlite.Connection):
    _stopping: asyncio.Future[Any] | None = None

    def stop(self) -> asyncio.Future[Any] | None:
        if not self._running:  # a stop marker is queued already; a second would never be taken
            return self._stopping
        self._stopping = super().stop()
        return self._stopping


def connect(database: str, **kwargs: Any) -> _Connection:
    """``aiosqlite.connect`` (same arguments) returning a connection that stops at most once; its worker
    thread is a daemon, as SQLAlchemy's own aiosqlite dialect makes it."""

    def connector() -> sqlite3.Connection:
        handle: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return handle

    connection = _Connection(connector, _ITER_CHUNK_SIZE)
    connection._thread.daemon = True
    return connection
