"""Splitting scrape targets between ingest replicas, and the shared baseline that makes a hand-over
exact.

Who scrapes what: rendezvous (highest-random-weight) hashing over the live replicas. Each replica
registers itself in a Redis sorted set with an expiry (``ttl_s``) and renews it every ``beat_s``;
the live set is the members not yet expired. A target belongs to the member with the highest
``hash(member, target)``, so when a replica joins or leaves only the targets it wins or held move,
and every replica computes the same owner from the same view without talking to the others. When a
replica dies its entry expires after at most ``ttl_s``, the survivors see it within ``beat_s`` more
and the new owner scrapes at once (see ``opscale.services.ingest.scrapers``): a target is orphaned for at
most ``ttl_s + beat_s`` plus one scrape. Expiry is computed from the ingest clock (``now_s``, as the
counter store's windows are), so replicas' clocks must agree to well under ``ttl_s`` (NTP does).

Why each sample is stored once even while views disagree (a replica that has not yet seen a join
or a death): a target's previous reading lives here too, with a version, and a scrape's deltas are
written only after ``commit`` moved the version from the one its baseline had (compare-and-set). Two
replicas that both scrape a target derive from the same baseline; the first to commit writes its
samples, the other's commit fails and it writes nothing. A new owner continues from the last
committed reading, so nothing is lost at a hand-over either. What can be lost: the delta of one
scrape whose replica dies (or loses the store) between its commit and its write.

``MemoryScrapeState`` is the in-process twin (one replica: the embedded default); both pass
tests/contract/test_scrape_state.py.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions as rexc

from opscale.errors import Unavailable


class ScrapeState(Protocol):
    async def load(self, key: str) -> tuple[int, str | None]:
        """The target's version and last committed reading (0, None when there is none)."""
        ...

    async def commit(self, key: str, version: int, reading: str, *, ttl_s: float) -> bool:
        """Store ``reading`` as version ``version + 1`` if the stored version is still ``version``."""
        ...

    async def beat(self, member: str, *, now_s: float, ttl_s: float) -> list[str]:
        """Register ``member`` as live until ``now_s + ttl_s``; the members live at ``now_s``, sorted."""
        ...

    async def leave(self, member: str) -> None: ...

    async def close(self) -> None: ...


def owner(key: str, members: Sequence[str]) -> str | None:
    """The member that owns ``key``: the highest hash of (member, key). None without members."""

    def weight(member: str) -> bytes:
        return hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()

    return max(members, key=weight, default=None)


class MemoryScrapeState:
    def __init__(self) -> None:
        self._readings: dict[str, tuple[int, str]] = {}
        self._members: dict[str, float] = {}

    async def load(self, key: str) -> tuple[int, str | None]:
        version, reading = self._readings.get(key, (0, None))
        return version, reading

    async def commit(self, key: str, version: int, reading: str, *, ttl_s: float) -> bool:
        if self._readings.get(key, (0, ""))[0] != version:
            return False
        self._readings[key] = (version + 1, reading)
        return True

    async def beat(self, member: str, *, now_s: float, ttl_s: float) -> list[str]:
        self._members[member] = now_s + ttl_s
        self._members = {m: until for m, until in self._members.items() if until > now_s}
        return sorted(self._members)

    async def leave(self, member: str) -> None:
        self._members.pop(member, None)

    async def close(self) -> None:
        return None


_COMMIT_LUA = """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(v) + 1), 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# Members: a sorted set scored by expiry (ms). KEYS[1] the set; ARGV member, now_ms, ttl_ms.
_BEAT_LUA = """
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[3]))
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
"""


class RedisScrapeState:
    """Keys under ``prefix``: ``scrape:members`` and one ``scrape:r:<hash>`` hash per target."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, owns_client: bool = False) -> None:
        self._client = client
        self._prefix = prefix
        self._owns = owns_client
        self._commit = client.register_script(_COMMIT_LUA)
        self._beat = client.register_script(_BEAT_LUA)

    def _key(self, key: str) -> str:
        return f"{self._prefix}scrape:r:{hashlib.sha1(key.encode()).hexdigest()}"

    async def load(self, key: str) -> tuple[int, str | None]:
        try:
            version, reading = await self._client.hmget(self._key(key), ["v", "r"])
        except (rexc.ConnectionError, rexc.TimeoutError) as exc:
            raise Unavailable(f"scrape state store unreachable: {exc}") from None
        if isinstance(reading, bytes):
            reading = reading.decode()
        return int(version or 0), reading

    async def commit(self, key: str, version: int, reading: str, *, ttl_s: float) -> bool:
        try:
            done = await self._commit(
                keys=[self._key(key)], args=[str(version), reading, max(1, round(ttl_s * 1000))]
            )
        except (rexc.ConnectionError, rexc.TimeoutError) as exc:
            raise Unavailable(f"scrape state store unreachable: {exc}") from None
        return bool(done)

    async def beat(self, member: str, *, now_s: float, ttl_s: float) -> list[str]:
        args: list[str | int] = [member, round(now_s * 1000), max(1, round(ttl_s * 1000))]
        try:
            live = await self._beat(keys=[f"{self._prefix}scrape:members"], args=args)
        except (rexc.ConnectionError, rexc.TimeoutError) as exc:
            raise Unavailable(f"scrape state store unreachable: {exc}") from None
        return sorted(m.decode() for m in live)

    async def leave(self, member: str) -> None:
        with contextlib.suppress(rexc.ConnectionError, rexc.TimeoutError):  # else it expires on its own
            await self._client.zrem(f"{self._prefix}scrape:members", member)

    async def close(self) -> None:
        if self._owns:
            await self._client.aclose()
