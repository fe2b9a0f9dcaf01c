"""Placement at scale: N concurrent agent streams with 1 s heartbeats; what it costs in CPU.

Starts `opscale serve placement` on a fresh PostgreSQL database (its own process, so its CPU time is
its own), then opens N agent streams from this process (spread over several channels, like separate
hosts), each registering 8 fake H100s and sending a heartbeat with 8 GPU telemetry entries every second
(phases spread over the second). After all have registered it measures a steady window:

- placement CPU (user + system seconds from /proc, as cores = CPU-s per wall-s) and its RSS;
- this load generator's CPU (it shares the machine, so the total is what the host spent);
- heartbeats sent, and at the end, from the database: nodes whose last heartbeat is under 3 s old and
  nodes marked lost (a placement that falls behind on heartbeats would start losing nodes).

    .venv/bin/python benchmarks/agent_streams.py --agents 2000 --window-s 30
    .venv/bin/python benchmarks/agent_streams.py --quick        # 200 agents, 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import sqlalchemy as sa

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.common.v1 import common_pb2
from opscale.db.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("OPSCALE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
GPUS = 8
H100 = 80 * 10**9
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime (fields 14, 15)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Load:
    def __init__(self) -> None:
        self.registered = 0
        self.register_ms: list[float] = []
        self.beats = 0
        self.errors: list[str] = []
        self.reconnects = 0
        self.seen: set[int] = set()
        self.stop = asyncio.Event()


async def one_agent(i: int, stub: agent_pb2_grpc.AgentServiceStub, load: Load, run: str) -> None:
    """Like a real agent: a broken stream is re-opened after a jittered exponential back-off."""
    session_id = uuid.uuid4().hex
    attempt = 0
    while not load.stop.is_set():
        if await one_stream(i, stub, load, run, session_id):
            attempt = 0
        load.reconnects += 1
        await asyncio.sleep(random.uniform(0, min(10.0, 0.2 * 2**attempt)))
        attempt += 1


async def one_stream(
    i: int, stub: agent_pb2_grpc.AgentServiceStub, load: Load, run: str, session_id: str
) -> bool:
    """One stream's life; True if it registered."""
    node = f"bench-{run}-{i:05d}"
    registered = False
    outbox: asyncio.Queue[apb.ConnectRequest | None] = asyncio.Queue()
    register = apb.Register(
        node_name=node,
        session_id=session_id,
        gpus=[
            apb.GpuInfo(index=g, uuid=f"{node}-{g}", gpu_type="H100", memory_bytes=H100) for g in range(GPUS)
        ],
        labels={"zone": "z1", "s2": f"s2-{i // 512}", "s1": f"s1-{i // 64}", "s0": f"rack-{i // 8}"},
        templates=["worker"],
    )
    outbox.put_nowait(apb.ConnectRequest(register=register))

    async def requests():  # type: ignore[no-untyped-def]
        while (item := await outbox.get()) is not None:
            yield item

    began = time.perf_counter()
    call = stub.Connect(requests())
    try:
        first = await call.read()
        if not isinstance(first, apb.ConnectResponse):
            load.errors.append(f"{node}: stream ended before the register ack")
            return False
        registered = True
        if i not in load.seen:
            load.seen.add(i)
            load.register_ms.append((time.perf_counter() - began) * 1000)
            load.registered += 1
        await asyncio.sleep(random.uniform(0, 1.0))  # spread beats over the second, as real agents drift
        seq = 0
        while not load.stop.is_set():
            seq += 1
            now_ms = int(time.time() * 1000)
            gpus = [
                common_pb2.GpuTelemetry(
                    index=g, uuid=f"{node}-{g}", utilization_fraction=0.5, memory_used_bytes=H100 // 2,
                    memory_total_bytes=H100, power_watts=400.0, timestamp_ms=now_ms,
                )
                for g in range(GPUS)
            ]  # fmt: skip
            outbox.put_nowait(
                apb.ConnectRequest(heartbeat=apb.Heartbeat(seq=seq, timestamp_ms=now_ms, gpus=gpus))
            )
            load.beats += 1
            await asyncio.sleep(1.0)
    except grpc.aio.AioRpcError as exc:
        if not load.stop.is_set():
            load.errors.append(f"{node}: {exc.code().name} {exc.details()}")
    finally:
        outbox.put_nowait(None)
        call.cancel()
    return registered


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(address: str, agents: int, channels: int, window_s: float, pid: int, db_url: str) -> None:
    run = uuid.uuid4().hex[:6]
    load = Load()
    chans = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [agent_pb2_grpc.AgentServiceStub(c) for c in chans]
    start, ramp_cpu0 = time.perf_counter(), cpu_seconds(pid)
    tasks = []
    for i in range(agents):
        tasks.append(asyncio.create_task(one_agent(i, stubs[i % channels], load, run)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # a fleet comes up over seconds, not in one instant
    while load.registered < agents and time.perf_counter() - start < 600:
        await asyncio.sleep(0.2)
    ramp_s = time.perf_counter() - start
    print(
        f"registered {load.registered}/{agents} in {ramp_s:.1f} s; register latency p50 "
        f"{percentile(load.register_ms, 0.5):.0f} ms, p99 {percentile(load.register_ms, 0.99):.0f} ms; "
        f"errors {len(load.errors)}; placement CPU during the ramp {cpu_seconds(pid) - ramp_cpu0:.1f} s "
        f"({(cpu_seconds(pid) - ramp_cpu0) / max(1, load.registered) * 1000:.0f} ms per registration)"
    )
    await asyncio.sleep(3.0)  # let the registration burst settle
    cpu0, own0, beats0, t0 = cpu_seconds(pid), own_cpu(), load.beats, time.perf_counter()
    await asyncio.sleep(window_s)
    cpu1, own1, beats1, t1 = cpu_seconds(pid), own_cpu(), load.beats, time.perf_counter()
    wall = t1 - t0
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        fresh = conn.execute(
            sa.text("SELECT count(*) FROM nodes WHERE last_heartbeat_at > now() - interval '3 seconds'")
        ).scalar_one()
        lost = conn.execute(sa.text("SELECT count(*) FROM nodes WHERE status = 'lost'")).scalar_one()
        ages = conn.execute(
            sa.text(
                "SELECT percentile_cont(array[0.5, 0.99, 1.0]) WITHIN GROUP (ORDER BY "
                "extract(epoch FROM now() - last_heartbeat_at)) FROM nodes"
            )
        ).scalar_one()
    engine.dispose()
    print(f"steady window {wall:.1f} s: heartbeats {(beats1 - beats0) / wall:.0f}/s")
    print(f"placement CPU {(cpu1 - cpu0) / wall:.3f} cores, RSS {rss_mib(pid):.0f} MiB")
    print(f"heartbeat age in the database: p50 {ages[0]:.2f} s, p99 {ages[1]:.2f} s, max {ages[2]:.2f} s")
    print(f"load generator CPU {(own1 - own0) / wall:.3f} cores")
    print(
        f"nodes with a heartbeat < 3 s old: {fresh}/{agents}; lost: {lost}; "
        f"stream errors: {len(load.errors)} (each re-opened with back-off; {load.reconnects} re-opens in all)"
    )
    for error in load.errors[:5]:
        print("  ", error)
    load.stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for chan in chans:
        await chan.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=40, help="TCP connections the streams share")
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.agents, args.window_s = 200, 10.0
    name = f"opscale_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    upgrade(db_url)
    env = {
        **os.environ,
        "OPSCALE_DATABASE_URL": db_url,
        "OPSCALE_PLACEMENT_PORT": "0",
        "OPSCALE_METRICS_PORT": "0",
        "OPSCALE_HEARTBEAT_INTERVAL_S": "1",
        "OPSCALE_LOST_TIMEOUT_S": "10",
        "OPSCALE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "opscale.cli.main", "serve", "placement"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:
            match = re.search(r"placement on [\d.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        if port is None:
            raise SystemExit("placement did not start")
        print(
            f"agents {args.agents} over {args.channels} channels, {GPUS} GPUs each, 1 s heartbeats; "
            f"placement pid {proc.pid}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        asyncio.run(drive(f"127.0.0.1:{port}", args.agents, args.channels, args.window_s, proc.pid, db_url))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
