"""Retry a whole transaction that lost a compare-and-swap race.

Placement's own writes (status from agents, the reconciler, a plan) are recomputed from fresh reads, so
losing a race to a concurrent writer is not the caller's mistake: read again and redo, a few times,
before letting ``StaleVersion`` (ABORTED) out. Requests that carry the caller's expected version
(cordon with ``expected_version``) are not retried: their staleness is the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opscale.errors import StaleVersion

T = TypeVar("T")
ATTEMPTS = 5


async def retry_stale(work: Callable[[], Awaitable[T]], attempts: int = ATTEMPTS) -> T:
    for attempt in range(attempts):
        try:
            return await work()
        except StaleVersion:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")
