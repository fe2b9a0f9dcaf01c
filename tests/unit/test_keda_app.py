"""The KEDA scaler's use cases against an in-process twin of the decision service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from opscale.errors import InvalidArgument, NotFound
from opscale.pools import PoolKey
from opscale.services.keda.app import REFRESH_S, Counts, ScalerApp, target_of

DECODE = PoolKey("decode", "model")


class Twin:
    """Decisions by deployment; ``current`` is GetDecision, ``watch`` is unused here."""

    def __init__(self) -> None:
        self.decisions: dict[str, dict[PoolKey, int]] = {}
        self.reads = 0

    async def current(self, deployment: str) -> Counts:
        self.reads += 1
        if deployment not in self.decisions:
            raise NotFound(f"opscale has no deployment {deployment!r}")
        return self.decisions[deployment]

    async def watch(self) -> AsyncIterator[tuple[str, Counts]]:
        for item in list(self.decisions.items()):
            yield item


def test_metadata_is_checked_key_by_key() -> None:
    assert target_of({"deployment": "chat", "pool": "decode/model"}).pool == DECODE
    assert (
        target_of({"deployment": "chat", "pool": "decode/lm_head"}).metric_name
        == "opscale-chat-decode-lm-head"
    )
    for bad, text in [
        ({"pool": "decode/model"}, "scalerMetadata.deployment is required"),
        ({"deployment": "chat"}, "scalerMetadata.pool is required"),
        ({"deployment": "chat", "pool": "decode"}, "scalerMetadata.pool: a pool is written"),
        ({"deployment": "chat", "pool": "gpu/model"}, "stage 'gpu' is not one of"),
    ]:
        with pytest.raises(InvalidArgument, match=text):
            target_of(bad)


async def test_a_deployment_the_watch_stopped_bringing_is_read_again() -> None:
    twin, now = Twin(), [0.0]
    app = ScalerApp(twin, monotonic=lambda: now[0])
    await app.record("chat", {DECODE: 3})
    target = target_of({"deployment": "chat", "pool": "decode/model"})
    assert await app.replicas(target) == 3 and twin.reads == 0  # from the watch's cache
    now[0] = REFRESH_S + 1  # deleted meanwhile: the watch no longer brings it
    with pytest.raises(NotFound, match="no deployment 'chat'"):
        await app.replicas(target)
    twin.decisions["chat"] = {DECODE: 5}  # created again
    assert await app.replicas(target) == 5


async def test_changes_yield_the_count_then_each_change_only() -> None:
    twin = Twin()
    app = ScalerApp(twin)
    twin.decisions["chat"] = {DECODE: 2}
    stopping = asyncio.Event()
    stream = app.changes(target_of({"deployment": "chat", "pool": "decode/model"}), stopping)
    assert await anext(stream) == 2
    pending = asyncio.ensure_future(anext(stream))
    await app.record("chat", {DECODE: 2})  # the same count: nothing to push
    await asyncio.sleep(0.01)
    assert not pending.done()
    await app.record("chat", {DECODE: 0})
    assert await asyncio.wait_for(pending, 1.0) == 0
    stopping.set()
    await app.record("chat", {DECODE: 1})
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1.0)
