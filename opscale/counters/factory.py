"""Build the configured ``CounterStore`` from a URL: in-process twin or Redis."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from opscale.counters.base import CounterStore, StoreSettings
from opscale.counters.memory import InMemoryCounterStore
from opscale.counters.redis import RedisCounterStore
from opscale.errors import ConfigError

DEFAULT_PREFIX = "opscale:counters:"


def make_counter_store(
    url: str | None,
    *,
    settings: StoreSettings | None = None,
    prefix: str = DEFAULT_PREFIX,
    socket_timeout_s: float = 2.0,
) -> CounterStore:
    """``None`` or ``memory://`` -> ``InMemoryCounterStore``; ``redis://``, ``rediss://`` or
    ``unix://`` -> ``RedisCounterStore`` owning a new client.

    The client gets connect and read timeouts of ``socket_timeout_s`` (so a dead Redis becomes
    ``Unavailable`` quickly, not after the OS's TCP timeout) and no transparent retries: redis-py
    would re-send a script whose reply was lost, counting a batch without a batch_id twice. Callers
    retry, with a batch_id.
    """
    scheme = urlsplit(url).scheme.lower() if url else "memory"
    if url is None or scheme == "memory":
        return InMemoryCounterStore(settings)
    if scheme not in ("redis", "rediss", "unix"):
        # Only the scheme: the rest of the URL may hold a password.
        raise ConfigError(
            f"counter store URL scheme must be memory, redis, rediss or unix, got {scheme!r}", field="url"
        )
    if not socket_timeout_s > 0:
        raise ConfigError(f"socket_timeout_s must be > 0, got {socket_timeout_s!r}", field="socket_timeout_s")
    try:
        client = aioredis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigError(f"counter store URL ({scheme}://…) is malformed", field="url") from exc
    return RedisCounterStore(client, prefix, settings, owns_client=True)
