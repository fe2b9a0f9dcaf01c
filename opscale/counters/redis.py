"""Redis counter store: one Lua script per batch (atomic and idempotent), one per ``read_many``.

Atomicity: Redis runs a script to the end with no other command in between, and the script is called
only with ops that ``batch.prepare`` has already validated, so it has no reason to fail half way (it has
no rollback: a foreign non-hash key under our prefix, or an OOM refusal, could still stop it part way).
Idempotency: the script's first step reads ``d:<batch_id>``; if that batch was applied less than
``dedupe_ttl_s`` before ``now`` it returns 0 having written nothing, else it writes everything and
records the id (SET … PX dedupe_ttl). The check is logical (stored ms + ttl > now ms) as well as by
Redis TTL, so a virtual clock gives the same answers as the in-process twin.

Expiry: every touched key gets a PEXPIRE from its logical deadline minus ``now``, never shortened
(``PTTL < ttl``, which also covers a new key with no TTL, where ``PEXPIRE … GT`` would do nothing).
Reads enforce retention from ``now_s`` too, so Redis TTLs only free memory. They run on the server's
clock: a caller whose ``now_s`` advances slower than the wall clock may see data leave early.

The script is sent once per connection's server with EVALSHA and re-loaded on NOSCRIPT (redis-py's
``register_script``). Floats are added in Lua (IEEE doubles, stored with ``%.17g``, which round-trips)
rather than HINCRBYFLOAT (long double) so that sums equal the twin's to the last bit.

Reads: ``redis_read.READ_LUA`` folds every queried window server-side and returns small aggregates
(one round trip, no per-bucket parsing in Python); see that module for why the result is the twin's
to the bit.

Single Redis primary only: a batch spans many series and Redis Cluster would need them in one slot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

from opscale.counters.base import Kind, ReadQuery, SeriesKey, StoreSettings, WindowRead, WriteBatch
from opscale.counters.batch import KEEP_NEWEST, prepare
from opscale.counters.layout import check_batch_id, check_now, dedupe_key, to_ms
from opscale.counters.redis_read import READ_LUA, parse_reply, read_args, read_buckets
from opscale.counters.window import finish, fold, plan
from opscale.errors import Unavailable

# KEYS[1] dedupe key (a placeholder when ARGV[3] == '0'), KEYS[2..] data keys.
# ARGV: now_ms, dedupe_ttl_ms, has_batch_id, then per data key ONE string of space-separated words:
# "ttl_ms op field value [at_s] op field value [at_s] ..." (at_s only after op 'L'). Op codes as in
# batch.py. One packed argument per key rather than four per op: redis-py packs every argument in
# Python (~2,000 per 1,000-sample batch), which was a large share of ingest's CPU; Lua splits them
# in C. Words cannot contain spaces: fields are fixed names, values are ``repr`` of floats and ints.
_APPLY_LUA = """
local now_ms = tonumber(ARGV[1])
local dedupe_ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  local seen = redis.call('GET', KEYS[1])
  if seen and tonumber(seen) + dedupe_ttl > now_ms then return 0 end
end
for i = 2, #KEYS do
  local key = KEYS[i]
  local w, n = {}, 0
  for word in string.gmatch(ARGV[i + 2], '%S+') do
    n = n + 1
    w[n] = word
  end
  local ttl = tonumber(w[1])
  local a = 2
  while a <= n do
    local op, field, x = w[a], w[a + 1], w[a + 2]
    a = a + 3
    if op == 'i' then
      redis.call('HINCRBY', key, field, x)
    elseif op == 'f' then
      local cur = tonumber(redis.call('HGET', key, field) or '0')
      redis.call('HSET', key, field, string.format('%.17g', cur + tonumber(x)))
    elseif op == '<' or op == '>' then
      local cur = redis.call('HGET', key, field)
      if not cur or (op == '<' and tonumber(x) < tonumber(cur))
                 or (op == '>' and tonumber(x) > tonumber(cur)) then
        redis.call('HSET', key, field, x)
      end
    elseif op == 'L' then
      local at = w[a]
      a = a + 1
      local t = redis.call('HGET', key, 't')
      if not t or tonumber(at) >= tonumber(t) then redis.call('HSET', key, field, x, 't', at) end
    else
      return redis.error_reply('opscale counters: unknown op ' .. op)
    end
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'PX', dedupe_ttl) end
return 1
"""

# Errors that mean "Redis cannot serve us right now"; anything else is a bug and propagates.
# (BusyLoadingError and AuthenticationError are ConnectionErrors; ReadOnlyError: a failover.)
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ReadOnlyError,
    OSError,
)


def describe_address(client: aioredis.Redis) -> str:
    """host:port/db or the socket path, for error messages; never the credentials."""
    kw: dict[str, Any] = dict(client.connection_pool.connection_kwargs)
    if kw.get("path"):
        return f"unix:{kw['path']}/{kw.get('db', 0)}"
    return f"{kw.get('host', '?')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


class RedisCounterStore:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "opscale:counters:",
        settings: StoreSettings | None = None,
        *,
        owns_client: bool = False,
    ) -> None:
        """``owns_client``: ``close()`` closes the client too (the factory's case); otherwise the
        caller that made the client closes it."""
        self._client = client
        self._prefix = prefix
        self._settings = settings or StoreSettings()
        self._owns_client = owns_client
        self._address = describe_address(client)
        self._apply_script = client.register_script(_APPLY_LUA)
        self._read_script = client.register_script(READ_LUA)

    @property
    def settings(self) -> StoreSettings:
        return self._settings

    @property
    def client(self) -> aioredis.Redis:
        """The connection, for other small stores that share this Redis (ingest's scrape state)."""
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            raise Unavailable(
                f"Redis at {self._address} is unavailable during {what} ({type(exc).__name__}); retry later"
            ) from exc

    async def apply(self, batch: WriteBatch, *, batch_id: str | None = None, now_s: float) -> bool:
        now_ms = to_ms(check_now(now_s))
        bid = check_batch_id(batch_id)
        prepared = prepare(batch, self._settings, now_ms)
        if bid is None and not prepared.key_ops:
            return True
        keys = [self._prefix + dedupe_key(bid if bid is not None else "-")]
        args: list[str | int] = [now_ms, self._settings.dedupe_ttl_ms, "0" if bid is None else "1"]
        for ko in prepared.key_ops:
            keys.append(self._prefix + ko.key)
            words = [str(ko.ttl_ms)]
            for op in ko.ops:
                # repr() of a float is the shortest string that parses back to the same double.
                words += [op.code, op.field, repr(op.value)]
                if op.code == KEEP_NEWEST:
                    words.append(repr(op.at_s))
            args.append(" ".join(words))
        with self._guard("apply"):
            applied = await self._apply_script(keys=keys, args=args)
        return bool(applied)

    async def read(self, key: SeriesKey, kind: Kind, *, now_s: float, window_s: float) -> WindowRead:
        return (await self.read_many([ReadQuery(key, kind, window_s)], now_s=now_s))[0]

    async def read_many(self, queries: Sequence[ReadQuery], *, now_s: float) -> list[WindowRead]:
        now_s = check_now(now_s)
        plans = plan(queries, self._settings, to_ms(now_s))
        if not plans:
            return []
        with self._guard("read"):
            reply: bytes | str = await self._read_script(args=read_args(plans, self._settings, self._prefix))
            aggregates = parse_reply(reply)
            redo = [p for p, a in zip(plans, aggregates, strict=True) if a is None]
            reread = iter(await read_buckets(self._client, self._prefix, redo) if redo else ())
        out = []
        for p, a in zip(plans, aggregates, strict=True):
            if a is None:
                buckets, meta = next(reread)
                out.append(fold(p, self._settings, now_s, buckets, meta))
            else:
                out.append(finish(p, self._settings, now_s, a[0], a[1]))
        return out

    async def ping(self) -> None:
        with self._guard("ping"):
            await self._client.ping()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
