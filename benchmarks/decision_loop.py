"""Benchmark of the decision loop (BENCHMARKS.md, "Decision service"): the cost of one control tick over
N deployments in one process — list deployments, sync the lease, read every window from the counter
store, decide (pd policy), record every decision in the ledger, publish.

Setup: N ``pd`` deployments (1 s interval), each with its own steady decode load written once through
the ingest write path (``samples_to_writes``) so that every tick reads fresh, non-empty windows. The
placement hand-off is a double that answers APPLIED at once (placement's own cost is its benchmark);
with steady load most decisions repeat the plan in force and need no hand-off, as in a quiet cluster.
The clock is virtual: each tick advances it 1 s, so every deployment is due every tick and the loop
never sleeps; the figures are the tick's own wall and CPU time.

    .venv/bin/python benchmarks/decision_loop.py [--deployments 1000] [--ticks 20]
        [--db postgres|sqlite] [--counters redis|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from opscale.actuation import Actuation, Outcome, ResizePool
from opscale.clock import VirtualClock
from opscale.config import Settings
from opscale.counters import make_counter_store
from opscale.db.migrate import upgrade
from opscale.services.decision.deployments import DeploymentsApp
from opscale.services.decision.lease import DEFAULT_TTL_S, make_lease
from opscale.services.decision.loop import DecisionLoop, LoopOptions
from opscale.services.decision.metrics import loop_metrics
from opscale.services.decision.publish import DecisionHub
from opscale.services.runtime import open_runtime
from opscale.signals.samples import Sample, Throughput
from opscale.signals.writes import samples_to_writes
from opscale.spec import OperatorKind, PoolRef, Stage, parse_spec
from opscale.telemetry import build_telemetry

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/15"  # its own database: a million bucket keys would slow every SCAN in db 0
DECODE = PoolRef(stage=Stage.DECODE, operator=OperatorKind.MODEL)


class ApplyAll:
    async def actuate(
        self, deployment: str, spec_version: int, decision_id: str, resize: Sequence[ResizePool]
    ) -> Actuation:
        return Actuation(Outcome.APPLIED, "benchmark double")

    async def close(self) -> None:
        return None


def spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "model": {"preset": "llama3-8b"},
        "policy": "pd",
        "interval_s": 1.0,
        "slo": {"ttft_ms": 1000, "tbt_ms": 100},
        "pd_params": {"target_decode_tokens_per_s_per_instance": 1000, "prefill_per_decode": 0.5},
    }


async def run(args: argparse.Namespace) -> None:
    if args.db == "postgres":
        db_name = f"opscale_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name
    else:
        db_url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    prefix = f"opscale-bench-{uuid.uuid4().hex[:6]}:"
    counters_url = REDIS if args.counters == "redis" else "memory://"
    try:
        upgrade(db_url)
        clock = VirtualClock()
        telemetry = build_telemetry("opscale-bench")
        runtime = await open_runtime(
            Settings(database_url=db_url, counters_url=counters_url, metrics_port=None),
            telemetry,
            clock=clock,
            counters=make_counter_store(counters_url, prefix=prefix),
        )
        names = [f"d{i:05d}" for i in range(args.deployments)]
        app = DeploymentsApp(runtime.sessions, clock)
        for name in names:
            await app.create(parse_spec(spec(name)), "bench")
        # One sample per deployment spreading a steady decode rate over the whole run (plus the window).
        horizon = args.ticks + 40.0
        end = clock.now() + args.ticks + 2
        for i, name in enumerate(names):
            tps = 1000.0 + (37 * i) % 5000
            batch = samples_to_writes(
                [Sample(name, end, Throughput(tps, tps * 4, horizon), pool=DECODE)], runtime.counters.settings
            )
            await runtime.counters.apply(batch, now_s=end)
        options = LoopOptions(replica_id="bench")
        # The service's own TTL: on a busy 2-core machine the cold tick of 1,000 deployments takes 5-8 s,
        # past it; the loop renews the lease during such a pass, and ``connects`` says whether it held.
        lease = make_lease(runtime.engine, db_url, "bench", ttl_s=args.lease_ttl_s)
        loop = DecisionLoop(
            sessions=runtime.sessions,
            read_sessions=runtime.read_sessions,
            counters=runtime.counters,
            clock=clock,
            lease=lease,
            actuator=ApplyAll(),
            hub=DecisionHub(),
            tracer=telemetry.tracer("bench"),
            metrics=loop_metrics(telemetry.registry),
            options=options,
        )
        walls, cpus, counts = [], [], []
        for tick in range(args.ticks + 1):
            clock.advance(1.0)
            w0, c0 = time.perf_counter(), time.process_time()
            views = await loop.tick()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if tick == 0:
                print(
                    f"cold tick (specs parsed, policies built, ledger read): {wall * 1000:.0f} ms wall, "
                    f"{cpu * 1000:.0f} ms CPU, {len(views)} decisions"
                )
                continue
            walls.append(wall)
            cpus.append(cpu)
            counts.append(len(views))
        handed = sum(1 for v in views if v.placement == Outcome.APPLIED)
        print(f"db={args.db} counters={args.counters} deployments={args.deployments} ticks={args.ticks}")
        print(f"decisions per tick: {statistics.mean(counts):.0f} (last tick: {handed} handed to placement)")
        print(f"tick wall ms: median {statistics.median(walls) * 1000:.0f}, max {max(walls) * 1000:.0f}")
        print(f"tick CPU ms:  median {statistics.median(cpus) * 1000:.0f}, max {max(cpus) * 1000:.0f}")
        print(f"lease: TTL {args.lease_ttl_s:g} s, connections opened {getattr(lease, 'connects', '-')}")
        per = statistics.median(walls) / max(1, statistics.mean(counts))
        print(
            f"per deployment: {per * 1e6:.0f} us wall; "
            f"ticks/s at this size: {1 / statistics.median(walls):.2f}"
        )
        await lease.release_all()
        await runtime.close()
        telemetry.shutdown()
    finally:
        if args.db == "postgres":
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            admin.dispose()
        if args.counters == "redis":
            import redis.asyncio as aioredis

            client = aioredis.from_url(REDIS)
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--counters", choices=["redis", "memory"], default="redis")
    parser.add_argument("--lease-ttl-s", type=float, default=DEFAULT_TTL_S, help="the lease's TTL")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
