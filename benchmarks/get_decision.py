"""Benchmark of ``GetDecision`` latency under concurrent clients (BENCHMARKS.md, "Decision service").

Server: one decision service process (this one) over PostgreSQL, its ledger holding one decision for each
of 100 deployments (made by one tick of the real loop); its own loop leads nothing during the measurement
(a lease that is never granted), so the figures are the read path alone: gRPC, the interceptor, one
session with two indexed queries (the deployment, its newest decision), the proto conversion.
Clients: a second process, N concurrent callers on one channel, each calling ``GetDecision`` for a
random deployment back to back for ``--seconds``; latency is measured per call in the client.

    .venv/bin/python benchmarks/get_decision.py [--clients 1,8,32,64] [--seconds 5] [--db postgres|sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Collection, Sequence

import grpc
import sqlalchemy as sa

from opscale.actuation import Actuation, Outcome, ResizePool
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.clock import VirtualClock
from opscale.config import Settings
from opscale.db.migrate import upgrade
from opscale.grpcutil.server import start_service, stop_service
from opscale.services.decision.deployments import DeploymentsApp
from opscale.services.decision.lease import make_lease
from opscale.services.decision.loop import LoopOptions
from opscale.services.decision.wiring import build_service
from opscale.services.runtime import open_runtime
from opscale.spec import parse_spec
from opscale.telemetry import build_telemetry

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEPLOYMENTS = 100


class ApplyAll:
    async def actuate(
        self, deployment: str, spec_version: int, decision_id: str, resize: Sequence[ResizePool]
    ) -> Actuation:
        return Actuation(Outcome.APPLIED, "benchmark double")

    async def close(self) -> None:
        return None


class NeverLeads:
    holder_id = "reader"

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        return frozenset()

    namespace = "decision"
    ttl_s = math.inf

    def epoch(self, name: str) -> int | None:
        return None

    async def renew(self) -> None:
        return None

    async def release_all(self) -> None:
        return None


def spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "model": {"preset": "llama3-8b"},
        "policy": "static",
        "interval_s": 1.0,
        "slo": {"ttft_ms": 1000, "tbt_ms": 100},
        "static_params": {
            "pools": [
                {"pool": {"stage": "decode", "operator": "model"}, "replicas": 4},
                {"pool": {"stage": "prefill", "operator": "model"}, "replicas": 2},
            ]
        },
    }


async def _clients(target: str, n: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        await stub.GetDecision(pb.GetDecisionRequest(deployment="d00000"), timeout=5)  # connect
        stop = time.perf_counter() + seconds

        async def caller(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop:
                name = f"d{rng.randrange(DEPLOYMENTS):05d}"
                t0 = time.perf_counter()
                await stub.GetDecision(pb.GetDecisionRequest(deployment=name), timeout=10)
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(caller(i) for i in range(n)))
    return latencies


def _client_process(target: str, n: int, seconds: float, out: mp.Queue[list[float]]) -> None:
    out.put(asyncio.run(_clients(target, n, seconds)))


async def run(args: argparse.Namespace) -> None:
    if args.db == "postgres":
        db_name = f"opscale_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name
    else:
        db_url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    try:
        upgrade(db_url)
        telemetry = build_telemetry("opscale-bench")
        clock = VirtualClock()
        runtime = await open_runtime(
            Settings(database_url=db_url, counters_url="memory://", metrics_port=None), telemetry, clock=clock
        )
        app = DeploymentsApp(runtime.sessions, clock)
        for i in range(DEPLOYMENTS):
            await app.create(parse_spec(spec(f"d{i:05d}")), "bench")
        maker = build_service(
            runtime,
            options=LoopOptions(replica_id="maker"),
            actuator=ApplyAll(),
            lease=make_lease(runtime.engine, db_url, "maker"),
        )
        await maker.loop.tick()  # one decision per deployment
        await maker.lease.release_all()

        async def idle(_seconds: float) -> None:
            await asyncio.sleep(0.2)

        reader = build_service(
            runtime,
            options=LoopOptions(replica_id="reader"),
            actuator=ApplyAll(),
            lease=NeverLeads(),
            pace=idle,
        )
        running = await start_service(reader.definition, "127.0.0.1", 0, telemetry)
        target = f"127.0.0.1:{running.port}"
        print(
            f"db={args.db} deployments={DEPLOYMENTS} seconds={args.seconds} (server and clients: 2 processes)"
        )
        print("| clients | calls/s | p50 ms | p99 ms | max ms |")
        print("|---:|---:|---:|---:|---:|")
        ctx = mp.get_context("spawn")
        for n in [int(x) for x in args.clients.split(",")]:
            queue: mp.Queue[list[float]] = ctx.Queue()
            proc = ctx.Process(target=_client_process, args=(target, n, args.seconds, queue))
            proc.start()
            lat: list[float] = []
            while proc.is_alive() or not queue.empty():  # keep serving while the clients run
                try:
                    lat = queue.get_nowait()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            proc.join()
            lat.sort()
            q = statistics.quantiles(lat, n=100, method="inclusive")
            print(
                f"| {n} | {len(lat) / args.seconds:,.0f} | {q[49] * 1000:.2f} | {q[98] * 1000:.2f} | "
                f"{lat[-1] * 1000:.1f} |"
            )
        await stop_service(running, 1.0)
        await runtime.close()
        telemetry.shutdown()
    finally:
        if args.db == "postgres":
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
