"""Benchmark of engine scraping (BENCHMARKS.md, "Scraping"): CPU per scrape of one target, and how
many targets one ingest process keeps up with at a 1 s interval.

The endpoints are simulated vLLM and SGLang engines (tests/fixtures/metrics/enginesim.py, the
engines' own metric definitions): 60 one-second snapshots each, precomputed and served by a separate
process (its own interpreter and core), every target a distinct URL on that server. The ingest side
is the real wiring (SQLite database, in-process counters or Redis), in this process.

1. Cost per scrape: ``scrape_once`` of one target, repeated, as process CPU time per scrape, split
   into fetch + parse, read + derive, and push (validate, fold, write).
2. Capacity: N targets scraped by the real scheduler (``ScrapeManager.run``) at a 1 s interval for
   ``--duration`` seconds; reported: scrapes done / due, the longest gap between two scrapes of one
   target, and the ingest process's CPU use (one core is 100%: an ingest process is one asyncio loop).

    .venv/bin/python benchmarks/scrape.py [--duration 20] [--targets 25,50,100,200]
        [--counters redis://127.0.0.1:6379/0] [--postgres postgresql+psycopg://postgres@127.0.0.1/postgres]

The embedded default (SQLite, in-process counters) is the default here; production is PostgreSQL and
Redis. Failed scrapes are logged to stderr and counted in the table's last column.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

# The simulator lives with the test fixtures; run from a checkout, the repository root is importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opscale.clock import SystemClock
from opscale.config import ScrapeTarget, Settings
from opscale.counters import make_counter_store
from opscale.db.migrate import upgrade
from opscale.db.repo import DeploymentRepo
from opscale.scrape import derive_samples, detect_engine, parse_exposition, read_models
from opscale.services.ingest.http_fetch import http_get
from opscale.services.ingest.wiring import assemble
from opscale.services.runtime import open_runtime
from opscale.signals import SampleBatch, store_settings
from opscale.spec import OperatorKind, PoolRef, Stage
from opscale.telemetry import build_telemetry
from tests.fixtures.metrics.enginesim import T0, EngineSim, Workload

LOAD = Workload(rate_per_s=10.0, slots=64, kv_capacity_tokens=250_000)


def snapshots(kind: str, dp: int) -> list[str]:
    sim = EngineSim(kind, dp=dp, workload=LOAD, horizon_s=90, seed=1)
    return [sim.exposition_at(T0 + 20 + s) for s in range(60)]


def serve(kinds: list[str], conn: Connection) -> None:
    """Serves /<kind>/<i>: the snapshot of the current second (cycling), for any i."""
    texts = {kind: [t.encode() for t in snapshots(kind, 1)] for kind in kinds}
    start = time.monotonic()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            kind = head.split(b" ", 2)[1].decode().split("/")[1]
            body = texts[kind][int(time.monotonic() - start) % 60]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, KeyError, IndexError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        server.close()

    asyncio.run(main())


async def cost_per_scrape(kind: str, dp: int, repeats: int) -> dict[str, float]:
    """CPU ms per scrape, by step, on snapshots one second apart (pure steps; push to memory)."""
    texts = snapshots(kind, dp)
    store = make_counter_store("memory://", settings=store_settings())
    pool = PoolRef(stage=Stage.SERVING, operator=OperatorKind.MODEL)
    from opscale.signals import samples_to_writes, validate_samples

    parse = derive = push = 0.0
    prev = None
    for i in range(repeats):
        text = texts[i % 60]
        at = T0 + 20 + i
        t0 = time.process_time()
        expo = parse_exposition(text)
        engine = detect_engine(expo)
        assert engine is not None
        t1 = time.process_time()
        (reading,) = read_models(expo, engine, at).values()
        d = derive_samples(prev, reading, deployment="bench", pool=pool, instance="e")
        t2 = time.process_time()
        batch = SampleBatch(d.samples)
        validate_samples(batch.samples, now_s=at, store=store.settings)
        await store.apply(samples_to_writes(batch.samples, store.settings), now_s=at)
        t3 = time.process_time()
        prev = reading
        parse, derive, push = parse + t1 - t0, derive + t2 - t1, push + t3 - t2
    return {
        "bytes": float(len(texts[0])),
        "parse": 1000 * parse / repeats,
        "derive": 1000 * derive / repeats,
        "push": 1000 * push / repeats,
    }


async def fetch_cost(url: str, repeats: int) -> float:
    t0 = time.process_time()
    for _ in range(repeats):
        await http_get(url, 2.0)
    return 1000 * (time.process_time() - t0) / repeats


async def capacity(
    port: int, n: int, duration: float, counters_url: str, tmp: str, database: str | None
) -> dict[str, float]:
    db = database or f"sqlite:///{tmp}/bench-{n}.db"
    upgrade(db)
    targets = [
        ScrapeTarget.model_validate({"url": f"http://127.0.0.1:{port}/{kind}/{i}", "deployment": f"t{i}",
                                     "role": "serving"})
        for i in range(n)
        for kind in ("vllm" if i % 2 == 0 else "sglang",)
    ]  # fmt: skip
    settings = Settings(database_url=db, counters_url=counters_url, metrics_port=None, scrape_targets=targets)
    counters = None
    if counters_url.startswith("redis"):
        counters = make_counter_store(
            counters_url, settings=store_settings(), prefix=f"bench:{uuid.uuid4().hex[:8]}:"
        )
    runtime = await open_runtime(settings, build_telemetry("bench"), clock=SystemClock(), counters=counters)
    async with runtime.sessions() as session, session.begin():
        repo = DeploymentRepo(session, clock=runtime.clock)
        for i in range(n):
            spec = {
                "name": f"t{i}",
                "model": {"preset": "llama3-8b"},
                "slo": {"ttft_ms": 1000, "tbt_ms": 100},
            }
            await repo.create(f"t{i}", spec, "bench")
    ingest = assemble(runtime)
    times: dict[str, list[float]] = {}
    for scraper in ingest.loops:
        original = scraper.scrape_once

        async def timed(original=original, key=scraper.key) -> bool:  # type: ignore[no-untyped-def]
            times.setdefault(key, []).append(time.monotonic())
            return await original()

        scraper.scrape_once = timed  # type: ignore[method-assign]
    stopping = asyncio.Event()
    cpu0, wall0 = time.process_time(), time.monotonic()
    task = asyncio.create_task(ingest.manager.run(stopping))
    await asyncio.sleep(duration)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    failed = sum(s.health.consecutive_failures > 0 for s in ingest.loops)  # type: ignore[attr-defined]
    stopping.set()  # (scrapes cut short by the stop may log a lost connection: not counted)
    await task
    await runtime.close()
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(ts)]
    done = sum(len(ts) for ts in times.values())
    return {
        "targets": n,
        "done_per_due": done / (n * duration),  # one scrape per target and second is due
        "max_gap_s": max(gaps) if gaps else float("nan"),
        "p50_gap_s": statistics.median(gaps) if gaps else float("nan"),
        "p99_gap_s": statistics.quantiles(gaps, n=100)[98] if len(gaps) > 100 else float("nan"),
        "cpu_pct": 100 * cpu / wall,
        "failing": failed,
    }


def fresh_postgres(admin_url: str, n: int) -> str:
    """A new, empty database on the server of ``admin_url`` (left for the operator to drop)."""
    import sqlalchemy as sa

    name = f"opscale_bench_{n}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


async def main(args: argparse.Namespace) -> None:
    print(f"# scrape benchmark, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("\n## CPU per scrape (ms), pure steps, in-process counters")
    row("engine", "DP", "exposition bytes", "parse", "read + derive", "validate + fold + write", "total")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in ("vllm", "sglang"):
        for dp in (1, 2):
            c = await cost_per_scrape(kind, dp, args.repeats)
            total = c["parse"] + c["derive"] + c["push"]
            row(
                kind,
                dp,
                f"{c['bytes']:.0f}",
                *(f"{c[k]:.2f}" for k in ("parse", "derive", "push")),
                f"{total:.2f}",
            )

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(["vllm", "sglang"], child), daemon=True)
    server.start()
    port = parent.recv()
    try:
        fetch_ms = await fetch_cost(f"http://127.0.0.1:{port}/vllm/0", 200)
        print(f"\nHTTP GET of one exposition over loopback: {fetch_ms:.2f} ms CPU")
        print(f"\n## Capacity at a 1 s interval ({args.duration:g} s each, counters {args.counters})")
        row("targets", "scrapes done / due", "median gap (s)", "p99 gap (s)", "longest gap (s)",
            "ingest CPU (% of one core)", "failing")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|")
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.targets:
                database = fresh_postgres(args.postgres, n) if args.postgres else None
                r = await capacity(port, n, args.duration, args.counters, tmp, database)
                gaps = (f"{r[k]:.2f}" for k in ("p50_gap_s", "p99_gap_s", "max_gap_s"))
                row(n, f"{r['done_per_due']:.3f}", *gaps, f"{r['cpu_pct']:.0f}", f"{r['failing']:.0f}")
    finally:
        parent.send("stop")
        server.join(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument(
        "--targets", type=lambda s: [int(x) for x in s.split(",")], default=[25, 50, 100, 200]
    )
    parser.add_argument("--counters", default="memory://", help="memory:// or redis://host:port/db")
    parser.add_argument(
        "--postgres", default=None, help="admin URL (postgresql+psycopg://…/postgres): a new database per run"
    )
    asyncio.run(main(parser.parse_args()))
