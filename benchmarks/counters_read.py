"""Benchmark of window reads from the Redis counter store (BENCHMARKS.md, "Decision service": "after
server-side reads"): ``read_window_summary`` for N deployments, as the decision loop issues it each
tick (32 deployments at a time on one asyncio loop), by two read paths over the same data in one run:

- ``server``: ``RedisCounterStore.read_many`` as shipped — one Lua call folds every queried window in
  Redis (``opscale/counters/redis_read.READ_LUA``).
- ``pipelined``: the read before it — one HGETALL per series per bucket in one pipeline, each bucket
  parsed and folded in Python. It is rebuilt here from the pieces the store still has
  (``redis_read.read_buckets``, kept as the exact fallback for counts past 2**53, and ``window.fold``),
  so the comparison runs both paths against the same keys, server and moment, without a second checkout.

Every round reads all N deployments with each path, alternating which goes first; the figures are
medians over rounds. Client CPU is ``time.process_time`` of this process; Redis CPU is the change in
Redis's ``used_cpu_user + used_cpu_sys`` over the round (it runs on the same machine: the server-side
fold moves work there, so both are reported). Both paths' summaries are checked to be equal.

Data: per deployment, ``--window`` + 2 seconds of 1 s buckets of the 11 deployment-wide series and 10
series for each of 2 pools (31 series, the decision loop's read for a P/D deployment): ~20 requests/s
with lognormal token lengths and latencies (nearly every observation in its own bin, ~10-25 non-empty
bins per histogram bucket), TBT observations ~10× as many, counters for tokens, GPU and pool state.

    .venv/bin/python benchmarks/counters_read.py [--deployments 1000] [--rounds 5] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from opscale.counters import (
    CounterWrite,
    HistogramWrite,
    ReadQuery,
    RedisCounterStore,
    WindowRead,
    Write,
    WriteBatch,
)
from opscale.counters.layout import check_now, to_ms
from opscale.counters.redis_read import read_buckets
from opscale.counters.window import fold, plan
from opscale.signals import series as S
from opscale.signals.summary import WindowSummary, read_window_summary
from opscale.spec import OperatorKind, PoolRef, Stage

REDIS = "redis://127.0.0.1:6379/15"  # the decision benchmark's database: keeps these keys out of db 0
POOLS = (
    PoolRef(stage=Stage.PREFILL, operator=OperatorKind.MODEL),
    PoolRef(stage=Stage.DECODE, operator=OperatorKind.MODEL),
)
T0 = 1_700_000_000.0


class PipelinedReads(RedisCounterStore):
    """The read path before the server-side fold (see the module docstring)."""

    async def read_many(self, queries: Sequence[ReadQuery], *, now_s: float) -> list[WindowRead]:
        now_s = check_now(now_s)
        plans = plan(queries, self.settings, to_ms(now_s))
        got = await read_buckets(self._client, self._prefix, plans)
        return [fold(p, self.settings, now_s, b, m) for p, (b, m) in zip(plans, got, strict=True)]


def second_of_load(dep: str, t: float, rng: random.Random) -> list[Write]:
    """One second of one deployment's samples, as ingest would write them."""
    out: list[Write] = []
    for _ in range(20):
        at = t + rng.random()
        out.append(HistogramWrite(S.deployment_key(dep, S.INPUT_TOKENS), at, round(rng.lognormvariate(7, 1))))
        out.append(
            HistogramWrite(S.deployment_key(dep, S.OUTPUT_TOKENS), at, round(rng.lognormvariate(5, 1)))
        )
        out.append(HistogramWrite(S.deployment_key(dep, S.TTFT_MS), at, rng.lognormvariate(5, 0.6)))
        out.append(HistogramWrite(S.deployment_key(dep, S.E2E_MS), at, rng.lognormvariate(8, 0.5)))
        out.append(HistogramWrite(S.deployment_key(dep, S.TBT_MS), at, rng.lognormvariate(3, 0.3), 10))
        out.append(CounterWrite(S.deployment_key(dep, S.CACHED_INPUT_TOKENS), at, rng.randrange(500)))
    for name in (
        S.DECODE_TOKENS,
        S.PREFILL_TOKENS,
        S.GPU_SAMPLES,
        S.GPU_UTILIZATION_SUM,
        S.GPU_POWER_WATTS_SUM,
    ):
        out.append(CounterWrite(S.deployment_key(dep, name), t + 0.5, rng.uniform(0, 5000)))
    for pool in POOLS:
        for name in S.POOL_SERIES:
            out.append(CounterWrite(S.pool_key(dep, name, pool), t + 0.5, rng.uniform(0, 100)))
    return out


async def populate(store: RedisCounterStore, deployments: list[str], seconds: int, now_s: float) -> None:
    rng = random.Random(7)
    for dep in deployments:
        writes = [w for s in range(seconds) for w in second_of_load(dep, now_s - seconds + s, rng)]
        await store.apply(WriteBatch(tuple(writes)), now_s=now_s)


async def redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def read_all(
    store: RedisCounterStore, deployments: list[str], now_s: float, window_s: float
) -> list[WindowSummary]:
    sem = asyncio.Semaphore(32)

    async def one(dep: str) -> WindowSummary:
        async with sem:
            return await read_window_summary(store, dep, now_s=now_s, window_s=window_s, pools=POOLS)

    return await asyncio.gather(*(one(d) for d in deployments))


async def timed(
    client: aioredis.Redis, fn: Callable[[], Awaitable[list[WindowSummary]]]
) -> tuple[float, float, float, list[WindowSummary]]:
    r0, w0, c0 = await redis_cpu(client), time.perf_counter(), time.process_time()
    out = await fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return wall, cpu, await redis_cpu(client) - r0, out


async def run(args: argparse.Namespace) -> None:
    client = aioredis.from_url(REDIS)
    prefix = f"bench-read:{uuid.uuid4().hex[:8]}:"
    settings = S.store_settings()
    server = RedisCounterStore(client, prefix, settings)
    pipelined = PipelinedReads(client, prefix, settings)
    deployments = [f"dep-{i:04d}" for i in range(args.deployments)]
    now_s = T0 + 1000.0
    try:
        t = time.perf_counter()
        await populate(server, deployments, int(args.window) + 2, now_s)
        print(
            f"populated {len(deployments)} deployments in {time.perf_counter() - t:.1f} s; "
            f"load average before: {os.getloadavg()}"
        )
        paths = {"server": server, "pipelined": pipelined}
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in paths}
        for r in range(args.rounds + 1):  # round 0 warms both paths (script load, connections)
            order = list(paths) if r % 2 else list(reversed(paths))
            summaries = {}
            for name in order:
                read = functools.partial(read_all, paths[name], deployments, now_s + 0.5, args.window)
                wall, cpu, rcpu, summaries[name] = await timed(client, read)
                if r:
                    results[name].append((wall, cpu, rcpu))
            assert summaries["server"] == summaries["pipelined"], "the two read paths disagree"
        print(f"load average after: {os.getloadavg()}")
        print(
            f"{len(deployments)} deployments × {11 + 10 * len(POOLS)} series × {args.window:g} s window, "
            f"median of {args.rounds} rounds (ms per pass over all deployments)"
        )
        print("| read path | wall ms | client CPU ms | Redis CPU ms | client + Redis CPU ms |")
        print("|---|---:|---:|---:|---:|")
        med = {}
        for name, rows in results.items():
            wall, cpu, rcpu = (statistics.median(x[i] for x in rows) * 1000 for i in range(3))
            med[name] = (wall, cpu, rcpu)
            print(f"| {name} | {wall:,.0f} | {cpu:,.0f} | {rcpu:,.0f} | {cpu + rcpu:,.0f} |")
        (pw, pc, pr), (sw, sc, sr) = med["pipelined"], med["server"]
        print(
            f"pipelined / server: wall {pw / sw:.1f}×, client CPU {pc / sc:.1f}×, "
            f"client + Redis CPU {(pc + pr) / (sc + sr):.1f}×"
        )
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=10_000)]
        for i in range(0, len(keys), 10_000):
            await client.delete(*keys[i : i + 10_000])
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
