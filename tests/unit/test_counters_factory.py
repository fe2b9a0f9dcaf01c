"""The factory picks the twin by URL, and a Redis that cannot be reached is ``Unavailable``, fast.

Needs no Redis server: port 1 on 127.0.0.1 refuses connections.
"""

from __future__ import annotations

import asyncio

import pytest

from opscale.counters import (
    CounterWrite,
    InMemoryCounterStore,
    Kind,
    RedisCounterStore,
    SeriesKey,
    WriteBatch,
    make_counter_store,
)
from opscale.errors import ConfigError, Unavailable

DEAD_URL = "redis://:s3cret-pw@127.0.0.1:1/0"


@pytest.mark.parametrize("url", [None, "", "memory://"])
def test_memory_urls_give_the_twin(url: str | None) -> None:
    assert isinstance(make_counter_store(url), InMemoryCounterStore)


def test_unknown_scheme_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError, match="'postgres'") as err:
        make_counter_store("postgres://user:s3cret-pw@host/db")
    assert "s3cret" not in str(err.value)


async def test_unreachable_redis_is_unavailable_quickly() -> None:
    store = make_counter_store(DEAD_URL, socket_timeout_s=0.5)
    assert isinstance(store, RedisCounterStore)
    key = SeriesKey.of("d1", "arrivals")
    try:
        async with asyncio.timeout(5):  # generous: refused connections fail at once, no retries
            for call in (
                store.ping(),
                store.apply(WriteBatch.of(CounterWrite(key, 100.0, 1)), batch_id="b", now_s=100.0),
                store.read(key, Kind.COUNTER, now_s=100.0, window_s=1),
            ):
                with pytest.raises(Unavailable) as err:
                    await call
                assert "127.0.0.1:1/0" in str(err.value)
                assert "s3cret" not in str(err.value)
    finally:
        await store.close()
