"""Benchmark of metrics-ingest (BENCHMARKS.md, "Ingest"): sustained samples/s into real Redis from
concurrent pushers, with push latency percentiles, per batch size and concurrency.

The service runs in its own process (its own interpreter and core, as in production), built by the
real wiring with a SQLite database and Redis counters under a throw-away key prefix. The pushers run
in this process on one asyncio loop, sending pre-serialised PushSamples requests (a fresh batch id
each time, the samples re-stamped once per second) so that the client's own Python cost stays small
and the service is what is measured. Latency is client-side: send to reply over loopback gRPC.

The sample mix is what a router plus its engines report: per batch, 30% arrivals (lognormal prompt
and output lengths), 30% TTFT and 30% TBT observations (lognormal, ~all distinct values), 5% queue
states over four pools, 3% throughput and 2% busy samples. Each pusher stands for one serving
instance and pushes for one of four deployments (``--mixed``: every batch spans all four, which
quadruples the series a batch touches). At the end the arrivals counted in Redis are checked against
the arrivals sent.

    .venv/bin/python benchmarks/ingest_push.py [--duration 10] [--batch-sizes 100,250,500,1000,2000]
        [--concurrency 8] [--concurrency-sweep 1,4,8,16] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection

import grpc

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.ingest.v1 import ingest_pb2 as pb

DEPLOYMENTS = ("bench-a", "bench-b", "bench-c", "bench-d")
POOLS = [
    cpb.PoolKey(stage=cpb.STAGE_PREFILL, operator=cpb.OPERATOR_KIND_ATTENTION),
    cpb.PoolKey(stage=cpb.STAGE_PREFILL, operator=cpb.OPERATOR_KIND_FFN),
    cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_ATTENTION),
    cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_FFN),
]
PUSH = "/opscale.api.ingest.v1.IngestService/PushSamples"


# --- the service, in its own process -------------------------------------------------------------------


def serve(
    redis_url: str, prefix: str, conn: Connection, profile: str | None, python_gc: bool = False
) -> None:
    if profile is None:
        asyncio.run(_serve(redis_url, prefix, conn, python_gc))
        return
    import cProfile

    cProfile.runctx("asyncio.run(_serve(redis_url, prefix, conn, python_gc))", globals(), locals(), profile)


async def _serve(redis_url: str, prefix: str, conn: Connection, python_gc: bool = False) -> None:
    import dataclasses

    import redis.asyncio as aioredis

    from opscale.config import Settings
    from opscale.counters import RedisCounterStore
    from opscale.db.migrate import upgrade
    from opscale.db.repo import DeploymentRepo
    from opscale.grpcutil.server import start_service, stop_service, tune_gc
    from opscale.services.ingest.wiring import build
    from opscale.services.runtime import open_runtime
    from opscale.signals import store_settings
    from opscale.telemetry import build_telemetry

    db = f"sqlite:///{tempfile.mkdtemp(prefix='opscale-bench-')}/opscale.db"
    upgrade(db)
    settings = Settings(database_url=db, counters_url=redis_url, metrics_port=None)
    telemetry = build_telemetry("bench-ingest")
    store = RedisCounterStore(aioredis.from_url(redis_url), prefix, store_settings(), owns_client=True)
    runtime = await open_runtime(settings, telemetry, counters=store)
    async with runtime.sessions() as session, session.begin():
        for name in DEPLOYMENTS:
            spec = {"name": name, "model": {"preset": "llama3-8b"}, "slo": {"ttft_ms": 1000, "tbt_ms": 100}}
            await DeploymentRepo(session).create(name, spec, "bench")
    running = await start_service(build(dataclasses.replace(runtime)), "127.0.0.1", 0, telemetry)
    tune_gc(None if python_gc else settings.gc_thresholds)  # as `opscale serve` does once it is up
    conn.send(running.port)
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until the parent says stop
    await stop_service(running, 1.0)
    await runtime.close()


# --- requests -----------------------------------------------------------------------------------------


def build_samples(
    n: int, now_s: float, rng: random.Random, deployment: str | None
) -> tuple[bytes, dict[str, int]]:
    """A batch of ``n`` samples stamped over the last second, serialised; and arrivals per deployment.
    ``deployment`` None: every sample names a random one of the four."""
    samples, arrivals = [], dict.fromkeys(DEPLOYMENTS, 0)
    for i in range(n):
        name = deployment or DEPLOYMENTS[rng.randrange(len(DEPLOYMENTS))]
        s = pb.Sample(
            deployment=name, instance=f"engine-{i % 16}", timestamp_ms=round((now_s - rng.random()) * 1000)
        )
        u = rng.random()
        if u < 0.30:
            s.arrival.input_tokens = min(100_000, int(rng.lognormvariate(6.5, 1.0)))
            s.arrival.output_tokens = min(8_000, int(rng.lognormvariate(5.0, 0.8)))
            s.arrival.cached_input_tokens = s.arrival.input_tokens // 4
            arrivals[name] += 1
        elif u < 0.60:
            s.latency.ttft_ms = rng.lognormvariate(5.5, 0.6)
        elif u < 0.90:
            s.latency.tbt_ms = rng.lognormvariate(3.3, 0.4)
        elif u < 0.95:
            s.pool.CopyFrom(POOLS[rng.randrange(4)])
            s.queue.running_requests, s.queue.waiting_requests = rng.randrange(64), rng.randrange(16)
            s.queue.kv_cache_usage_fraction = rng.random()
        elif u < 0.98:
            s.pool.CopyFrom(POOLS[2])
            s.throughput.decode_tokens_per_s, s.throughput.interval_s = rng.uniform(500, 5000), 0.5
        else:
            s.pool.CopyFrom(POOLS[rng.randrange(4)])
            s.busy.busy_s, s.busy.interval_s, s.busy.batch_size = (
                rng.random() * 0.5,
                0.5,
                rng.randrange(1, 128),
            )
        samples.append(s)
    return pb.PushSamplesRequest(samples=samples).SerializeToString(), arrivals


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    batch: int
    concurrency: int
    seconds: float
    samples: int
    latencies_ms: list[float]
    errors: int
    server_cpu_s: float

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        rate = self.samples / self.seconds
        per_cpu = self.samples / self.server_cpu_s if self.server_cpu_s else 0.0
        return (
            f"| {self.batch} | {self.concurrency} | {rate:,.0f} | {len(lat) / self.seconds:,.0f} | "
            f"{p50:.1f} | {p99:.1f} | {self.server_cpu_s / self.seconds:.2f} | {per_cpu:,.0f} | "
            f"{self.errors} |"
        )


async def run_case(
    address: str,
    pid: int,
    batch: int,
    concurrency: int,
    duration_s: float,
    sent: dict[str, int],
    mixed: bool,
) -> Result:
    rng = random.Random(batch * 1000 + concurrency)
    payloads: dict[tuple[int, str | None], tuple[bytes, dict[str, int]]] = {}

    def payload(deployment: str | None) -> tuple[bytes, dict[str, int]]:
        key = (int(time.time()), deployment)
        if key not in payloads:
            if all(k[0] != key[0] for k in payloads):
                payloads.clear()
            payloads[key] = build_samples(batch, time.time(), rng, deployment)
        return payloads[key]

    channels = [grpc.aio.insecure_channel(address) for _ in range(min(concurrency, 4))]
    calls = [
        ch.unary_unary(PUSH, request_serializer=None, response_deserializer=pb.PushSamplesResponse.FromString)
        for ch in channels
    ]
    latencies: list[float] = []
    accepted = errors = 0
    stop_at = time.perf_counter() + duration_s

    async def pusher(k: int) -> None:
        nonlocal accepted, errors
        call = calls[k % len(calls)]
        # A pusher stands for one serving-framework instance, which serves one deployment.
        deployment = None if mixed else DEPLOYMENTS[k % len(DEPLOYMENTS)]
        while time.perf_counter() < stop_at:
            body, arrivals = payload(deployment)
            request = pb.PushSamplesRequest(batch_id=uuid.uuid4().hex).SerializeToString() + body
            started = time.perf_counter()
            try:
                reply = await call(request, timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            accepted += reply.accepted_samples
            for name, n in arrivals.items():
                sent[name] += n

    started, cpu = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(pusher(k) for k in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    for ch in channels:
        await ch.close(None)
    return Result(batch, concurrency, elapsed, accepted, latencies, errors, cpu)


async def check_and_clean(redis_url: str, prefix: str, sent: dict[str, int], span_s: float) -> str:
    import redis.asyncio as aioredis

    from opscale.counters import RedisCounterStore
    from opscale.signals import read_window_summary, store_settings

    client = aioredis.from_url(redis_url)
    store = RedisCounterStore(client, prefix, store_settings())
    window = min(3600, int(span_s) + 5)
    now = time.time() + 1
    counted = {}
    for name in DEPLOYMENTS:
        summary = await read_window_summary(store, name, now_s=now, window_s=window, pools=[])
        counted[name] = summary.arrivals
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=10_000)]
    for i in range(0, len(keys), 10_000):
        await client.delete(*keys[i : i + 10_000])
    await client.aclose()
    verdict = "==" if counted == sent else "!="
    return (
        f"arrivals counted in Redis {verdict} arrivals sent ({sum(counted.values())} vs {sum(sent.values())})"
    )


async def main_async(args: argparse.Namespace, address: str, pid: int, prefix: str) -> None:
    sent = dict.fromkeys(DEPLOYMENTS, 0)
    header = (
        "| batch | pushers | samples/s | pushes/s | p50 ms | p99 ms | service CPU (cores) "
        "| samples per service CPU-second | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    began = time.time()
    print("\nBy batch size", flush=True)
    print(header, flush=True)
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        await run_case(
            address, pid, batch, args.concurrency, 2.0, sent, args.mixed
        )  # warm-up (its arrivals count too)
        print(
            (await run_case(address, pid, batch, args.concurrency, args.duration, sent, args.mixed)).row(),
            flush=True,
        )
    if args.concurrency_sweep:
        print(f"\nBy concurrency, batch {args.sweep_batch}", flush=True)
        print(header, flush=True)
        for c in [int(x) for x in args.concurrency_sweep.split(",")]:
            print(
                (await run_case(address, pid, args.sweep_batch, c, args.duration, sent, args.mixed)).row(),
                flush=True,
            )
    print("\n" + await check_and_clean(args.redis, prefix, sent, time.time() - began), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case (after a 2 s warm-up)")
    parser.add_argument("--batch-sizes", default="100,250,500,1000,2000")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent pushers for the batch sweep")
    parser.add_argument(
        "--python-gc-defaults",
        action="store_true",
        help="run the service with CPython's gc thresholds instead of the gc_thresholds setting",
    )
    parser.add_argument("--concurrency-sweep", default="1,4,8,16", help="'' to skip")
    parser.add_argument("--sweep-batch", type=int, default=1000)
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="every batch spans all four deployments (default: one per pusher)",
    )
    parser.add_argument(
        "--profile-service", metavar="FILE", help="run the service under cProfile, stats to FILE"
    )
    parser.add_argument(
        "--redis", default=os.environ.get("OPSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    prefix = f"opscale-bench:{uuid.uuid4().hex[:8]}:"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=serve,
        args=(args.redis, prefix, child, args.profile_service, args.python_gc_defaults),
        daemon=True,
    )
    proc.start()
    port = parent.recv()
    print(
        f"ingest service pid {proc.pid} on 127.0.0.1:{port}; Redis {args.redis} (prefix {prefix}); "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        asyncio.run(main_async(args, f"127.0.0.1:{port}", proc.pid or 0, prefix))
    finally:
        parent.send("stop")
        proc.join(10)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
