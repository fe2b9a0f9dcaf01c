"""Window reads on Redis: every query of a ``read_many`` folded server-side by one Lua script.

Why: the decision loop reads ~20 series × ``window_s / bucket_s`` buckets per deployment per tick. One
HGETALL per bucket, each reply parsed by redis-py, cost ~4 ms of client CPU per deployment (see
BENCHMARKS.md, "Decision service"). The script walks the same buckets inside Redis and returns one
small reply per query: the ``window.Aggregate`` (sum, count, min, max, newest gauge value and its time,
the non-empty histogram bins) and the meta ``t``. Python then runs the same ``window.finish`` as the
in-process twin.

Exact equality with the twin (``tests/contract/test_counters.py::test_twins_read_the_same``): the script
is ``window.accumulate`` transcribed — buckets oldest first, ``sum = sum + s`` from 0 in that order
(Lua numbers are IEEE doubles, as Python floats are, so the same additions in the same order round the
same way), ``v < lo`` / ``v > hi`` / ``t >= last_at`` as Python's ``min``/``max``/``>=`` decide, and
the *stored strings* of the winning min/max/last/at fields are returned for Python to parse as the
pipelined read did. Only the sum is re-formatted, with ``%.17g``, which round-trips a double.

The one place Lua cannot follow Python is integer size: counts are summed in doubles, exact only below
2**53. A query whose count or any bin count reaches that is answered ``-1`` by the script and re-read
bucket by bucket with ``read_buckets`` (the previous, pipelined read), so no count is ever rounded.

Keys are built in the script from the prefix, series id and bucket range rather than passed in KEYS:
~200 key arguments per deployment would bring back the argument-packing cost this avoids. That is fine
on a single Redis primary (what ``redis.py`` already requires) and would not be on Redis Cluster.
``flags=no-writes`` lets the read run on a replica and while Redis refuses writes for memory; script
flags need Redis 7 (the version opscale is deployed with).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from opscale.counters.base import StoreSettings
from opscale.counters.window import Aggregate, Fields, WindowPlan, overflow_bin

# ARGV: prefix, bucket_ms, then one string with a line per query: "series_id start_ms buckets overflow_bin"
# (one argument, not four per query: redis-py's command packing costs per argument). Series ids have
# no spaces (``SeriesKey`` allows none).
# Reply: one string, a line per query: "count sum lo hi last last_at meta_t bin count bin count ...",
# '-' for an absent field; count -1: not exact in doubles, re-read with read_buckets. One bulk string
# rather than nested arrays because redis-py's pure-Python parser costs ~1 µs per array element, and
# histograms have ~100 non-empty bins per window. Numbers never contain ' ' or '\n', nor equal '-'.
READ_LUA = r"""#!lua flags=no-writes
local prefix, bucket_ms = ARGV[1], tonumber(ARGV[2])
local LIMIT = 9007199254740992
local out = {}
local index = {}  -- field name -> bin index, or false: not a bin (names repeat across buckets)
for sid, start, nb, overflow in string.gmatch(ARGV[3], '(%S+) (%S+) (%S+) (%S+)') do
  start, nb, overflow = tonumber(start), tonumber(nb), tonumber(overflow)
  local base = prefix .. 'b:' .. sid .. ':'
  local sum, count, exact = 0, 0, true
  local lo, hi, lo_s, hi_s = math.huge, -math.huge, false, false
  local last_at, last_s, last_at_s = nil, false, false
  local bins = {}
  for j = 0, nb - 1 do
    local h = redis.call('HGETALL', base .. string.format('%d', start + j * bucket_ms))
    local nh = #h
    if nh > 0 then
      local s, l, t = 0, nil, nil
      for i = 1, nh, 2 do
        local name = h[i]
        local k = index[name]
        if k == nil then
          if string.byte(name, 1) == 98 then k = tonumber(string.sub(name, 2)) else k = false end
          index[name] = k
        end
        if k then
          if k > overflow then k = overflow end
          local c = (bins[k] or 0) + tonumber(h[i + 1])
          if c >= LIMIT then exact = false end
          bins[k] = c
        elseif name == 's' then s = tonumber(h[i + 1])
        elseif name == 'n' then
          count = count + tonumber(h[i + 1])
          if count >= LIMIT then exact = false end
        elseif name == 'lo' then
          local v = tonumber(h[i + 1])
          if v < lo then lo, lo_s = v, h[i + 1] end
        elseif name == 'hi' then
          local v = tonumber(h[i + 1])
          if v > hi then hi, hi_s = v, h[i + 1] end
        elseif name == 'l' then l = h[i + 1]
        elseif name == 't' then t = h[i + 1]
        end
      end
      sum = sum + s
      if t then
        local tv = tonumber(t)
        if last_at == nil or tv >= last_at then last_at, last_s, last_at_s = tv, l, t end
      end
    end
  end
  if not exact then count = -1 end
  local line = {string.format('%d', count), string.format('%.17g', sum), lo_s or '-', hi_s or '-',
                last_s or '-', last_at_s or '-', redis.call('HGET', prefix .. 'm:' .. sid, 't') or '-'}
  for k, c in pairs(bins) do
    line[#line + 1] = string.format('%d', k)
    line[#line + 1] = string.format('%d', c)
  end
  out[#out + 1] = table.concat(line, ' ')
end
return table.concat(out, '\n')
"""


def read_args(plans: Sequence[WindowPlan], settings: StoreSettings, prefix: str) -> list[str | int]:
    lines = "\n".join(f"{p.sid} {p.start_ms} {p.n_buckets} {overflow_bin(p, settings)}" for p in plans)
    return [prefix, settings.bucket_ms, lines]


def _num(raw: bytes, default: float | None) -> float | None:
    return default if raw == b"-" else float(raw)


def parse_reply(reply: bytes | str) -> list[tuple[Aggregate, float | None] | None]:
    """Per query: (aggregate, meta t) or None where the script asked for a bucket-by-bucket re-read."""
    raw = reply.encode() if isinstance(reply, str) else reply  # a client with decode_responses=True
    out: list[tuple[Aggregate, float | None] | None] = []
    for line in raw.split(b"\n"):
        count, total, lo, hi, last, last_at, meta, *flat = line.split(b" ")
        n = int(count)
        if n < 0:
            out.append(None)
            continue
        agg = Aggregate(
            sum=float(total),
            count=n,
            lo=float(lo) if lo != b"-" else math.inf,
            hi=float(hi) if hi != b"-" else -math.inf,
            last=_num(last, None),
            last_at=_num(last_at, None),
            bins={int(i): int(c) for i, c in zip(flat[::2], flat[1::2], strict=True)},
        )
        out.append((agg, _num(meta, None)))
    return out


def _text(s: object) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def decode_bucket(raw: object) -> dict[str, float | int]:
    """HGETALL reply -> fields. ``n`` and ``b<i>`` are integers (HINCRBY), every other field a float."""
    out: dict[str, float | int] = {}
    if not isinstance(raw, dict):
        return out
    for k, v in raw.items():
        name = _text(k)
        out[name] = int(_text(v)) if name == "n" or name[0] == "b" else float(_text(v))
    return out


async def read_buckets(
    client: aioredis.Redis, prefix: str, plans: Sequence[WindowPlan]
) -> list[tuple[list[Fields], float | None]]:
    """Every bucket of every plan, one HGETALL each in one pipeline, parsed in Python: the read before
    ``READ_LUA``, kept for counts past 2**53 (and for benchmarks/counters_read.py's comparison)."""
    async with client.pipeline(transaction=False) as pipe:
        for p in plans:
            for k in p.bucket_keys:
                pipe.hgetall(prefix + k)
            pipe.hget(prefix + p.meta_key, "t")
        replies: list[Any] = await pipe.execute()
    out, i = [], 0
    for p in plans:
        n = p.n_buckets
        buckets: list[Fields] = [decode_bucket(r) for r in replies[i : i + n]]
        meta = replies[i + n]
        i += n + 1
        out.append((buckets, None if meta is None else float(_text(meta))))
    return out
