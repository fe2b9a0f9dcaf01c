"""Real processes end to end: placement (PostgreSQL) + two agents with fake GPUs starting real workers.

Apply desired counts -> workers appear on the right GPU indices (CUDA_VISIBLE_DEVICES); scale in ->
drained, then stopped; kill -9 a worker -> restarted and the restart reported; kill -9 an agent and
restart it -> it adopts its workers, no duplicates; stop an agent for good (its host dies) -> its
replicas are re-placed on the other node. Bad input: a second agent claiming a live node's identity,
a launch template no agent allows, counts over capacity.

Short heartbeat/lost/resend timeouts come from settings; every wait polls with a deadline. Every
process this test started (services, agents, and the workers the agents started, found by their
OPSCALE_NODE environment) is killed at the end, pass or fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from opscale.api.common.v1 import common_pb2
from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.api.worker.v1 import worker_pb2, worker_pb2_grpc
from opscale.db.engine import make_async_engine, session_factory
from opscale.db.migrate import upgrade
from opscale.db.repo import DeploymentRepo

FAST = {
    "OPSCALE_HEARTBEAT_INTERVAL_S": "0.2",
    # Above an agent's restart time (process start + imports + registration, ~2 s on a busy host), so a
    # kill -9 and restart of an agent is an adoption, not a lost node.
    "OPSCALE_LOST_TIMEOUT_S": "5",
    "OPSCALE_AGENT_RECONNECT_MAX_S": "1",  # placement's start-up grace: this + the lost timeout
    "OPSCALE_RECONCILE_INTERVAL_S": "0.2",
    "OPSCALE_COMMAND_RESEND_S": "2",
    "OPSCALE_DRAIN_GRACE_S": "3",
    "OPSCALE_STOP_GRACE_S": "2",
    "OPSCALE_METRICS_PORT": "0",
    "OPSCALE_INGEST_PORT": "0",
    "OPSCALE_DECISION_PORT": "0",
    "OPSCALE_PLACEMENT_PORT": "0",
    "OPSCALE_KEDA_PORT": "0",
}
SPEC = {
    "name": "demo",
    "model": {"preset": "llama3-8b"},
    "slo": {"ttft_ms": 1000, "tbt_ms": 100},
    "mode": "colocated",
}
VLLM_SPEC = {
    **SPEC,
    "name": "needs-vllm",
    "launch": [{"pool": {"stage": "serving", "operator": "model"}, "template": "vllm"}],
}
AGENT_READY = re.compile(r"opscale agent ready: node (\S+), .* (\d+) replicas adopted, registration (\d+)")


@dataclass
class Procs:
    tmp: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)

    def spawn(self, name: str, *args: str, module: str = "opscale.cli.main") -> subprocess.Popen[str]:
        log = (self.tmp / f"{name}.log").open("a")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **self.env},
            cwd=Path(__file__).resolve().parents[2],
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for pid in workers_of(self.nodes):
            with _suppress():
                os.kill(pid, signal.SIGKILL)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError | PermissionError)  # type: ignore[arg-type]


def proc_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return {}
    if state in ("Z", "X"):
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def workers_of(nodes: set[str]) -> dict[int, dict[str, str]]:
    """Live worker processes started by our agents: pid -> environment."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        env = proc_env(int(entry.name))
        if env.get("OPSCALE_NODE") in nodes and "OPSCALE_REPLICA_ID" in env:
            out[int(entry.name)] = env
    return out


def read_line(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout_s: float = 30) -> re.Match[str]:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern.pattern!r}; stdout={seen!r}")


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


async def create_deployments(url: str) -> None:
    engine = make_async_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            repo = DeploymentRepo(session)
            await repo.create("demo", SPEC, "test")
            await repo.create("needs-vllm", VLLM_SPEC, "test")
    finally:
        await engine.dispose()


def desired(deployment: str, replicas: int) -> pb.ApplyDesiredRequest:
    pool = common_pb2.PoolKey(stage=common_pb2.STAGE_SERVING, operator=common_pb2.OPERATOR_KIND_MODEL)
    plan = common_pb2.PoolPlan(pool=pool, replicas=replicas, batch_size=8, gpus_per_replica=1)
    return pb.ApplyDesiredRequest(deployment=deployment, pools=[plan])


@pytest.fixture
async def procs(tmp_path: Path, pg_url: str) -> AsyncIterator[Procs]:
    upgrade(pg_url)
    await create_deployments(pg_url)
    running = Procs(tmp_path, {**FAST, "OPSCALE_DATABASE_URL": pg_url})
    try:
        yield running
    finally:
        running.cleanup()


async def test_two_agents_real_workers(procs: Procs) -> None:
    suffix = uuid.uuid4().hex[:6]
    n1, n2 = f"n1-{suffix}", f"n2-{suffix}"
    procs.nodes |= {n1, n2}
    placement = procs.spawn("placement", "serve", "placement")
    port = int(read_line(placement, re.compile(r"placement on [\d.]+:(\d+)")).group(1))
    address = f"127.0.0.1:{port}"

    def agent(node: str) -> subprocess.Popen[str]:
        # `python -m opscale.agent` is `opscale agent` without importing the whole CLI: a faster restart.
        return procs.spawn(
            node, "--placement", address, "--node-name", node, "--fake-gpus", "3xH100",
            "--state-dir", str(procs.tmp / node), "--label", "zone=z1", "--label", "s2=a", "--label", "s1=b",
            "--label", f"s0=rack-{node}", "--restart-backoff-s", "0.2", "--max-restarts", "3",
            module="opscale.agent",
        )  # fmt: skip

    agents = {n1: agent(n1), n2: agent(n2)}
    for proc in agents.values():
        read_line(proc, AGENT_READY)

    channel = grpc.aio.insecure_channel(address)
    stub = placement_pb2_grpc.PlacementServiceStub(channel)

    async def replicas(deployment: str = "demo") -> list[pb.Replica]:
        return list((await stub.GetReplicas(pb.GetReplicasRequest(deployment=deployment))).replicas)

    async def ready(n: int) -> bool:
        got = [r for r in await replicas() if r.desired_state == pb.REPLICA_DESIRED_STATE_RUNNING]
        return len(got) == n and all(r.observed_state == pb.REPLICA_OBSERVED_STATE_READY for r in got)

    def one_process_per_replica() -> dict[str, dict[str, str]]:
        by_replica: dict[str, list[dict[str, str]]] = {}
        for env in workers_of(procs.nodes).values():
            by_replica.setdefault(env["OPSCALE_REPLICA_ID"], []).append(env)
        duplicates = {k: len(v) for k, v in by_replica.items() if len(v) > 1}
        assert not duplicates, f"duplicate worker processes: {duplicates}"
        return {k: v[0] for k, v in by_replica.items()}

    try:
        # 1. Desired counts -> real worker processes on the GPUs placement chose.
        reply = await stub.ApplyDesired(desired("demo", 4))
        assert reply.replicas_to_start == 4 and not reply.infeasible
        await until("4 replicas ready", lambda: ready(4))
        running = one_process_per_replica()
        assert len(running) == 4
        for replica in await replicas():
            env = running[replica.id]
            assert env["OPSCALE_NODE"] == replica.node
            assert env["CUDA_VISIBLE_DEVICES"] == ",".join(str(i) for i in replica.gpu_indices)
            assert env["OPSCALE_DEPLOYMENT"] == "demo"
        # A router can drive a worker: one batch, with the profile's service time.
        endpoint = (await replicas())[0].endpoint
        async with grpc.aio.insecure_channel(endpoint) as worker_channel:
            worker = worker_pb2_grpc.WorkerServiceStub(worker_channel)
            done = await worker.ExecuteBatch(worker_pb2.ExecuteBatchRequest(batch_size=4, length_tokens=512))
            assert done.service_time_ms > 0 and done.replica_id == (await replicas())[0].id

        # 2. Over capacity (6 GPUs): infeasible with a reason, what fits is kept.
        reply = await stub.ApplyDesired(desired("demo", 9))
        assert [(i.requested, i.satisfiable) for i in reply.infeasible] == [(9, 6)]
        await until("6 replicas ready", lambda: ready(6))
        # A launch template no agent allows: infeasible, naming the template; nothing started.
        reply = await stub.ApplyDesired(desired("needs-vllm", 1))
        assert reply.replicas_to_start == 0 and "vllm" in reply.infeasible[0].reason

        # 3. Scale in: drained first (out of routing), then stopped; the processes go away.
        reply = await stub.ApplyDesired(desired("demo", 3))
        assert reply.replicas_to_drain == 3
        leaving = {r.id for r in await replicas() if r.desired_state == pb.REPLICA_DESIRED_STATE_DRAINING}
        assert len(leaving) == 3

        async def scaled_in() -> bool:
            live = {env["OPSCALE_REPLICA_ID"] for env in workers_of(procs.nodes).values()}
            return (
                await ready(3) and not (live & leaving) and not ({r.id for r in await replicas()} & leaving)
            )

        await until("scale-in to 3 finished", scaled_in)
        assert len(one_process_per_replica()) == 3

        # 4. kill -9 a worker: the agent restarts it and placement hears about the restart.
        victim = (await replicas())[0]
        pid = next(p for p, env in workers_of(procs.nodes).items() if env["OPSCALE_REPLICA_ID"] == victim.id)
        os.kill(pid, signal.SIGKILL)

        async def restarted() -> bool:
            now = {r.id: r for r in await replicas()}[victim.id]
            pids = [p for p, env in workers_of(procs.nodes).items() if env["OPSCALE_REPLICA_ID"] == victim.id]
            return now.restarts == 1 and pids not in ([], [pid]) and await ready(3)

        await until("worker restarted", restarted)
        assert "signal 9" in {r.id: r for r in await replicas()}[victim.id].message

        # 5. kill -9 an agent and start it again: it adopts its workers; no duplicates, no new replicas.
        before = {r.id for r in await replicas()}
        on_n1 = sum(1 for r in await replicas() if r.node == n1)
        agents[n1].kill()
        agents[n1].wait()
        agents[n1] = agent(n1)
        adopted = read_line(agents[n1], AGENT_READY)
        assert int(adopted.group(2)) == on_n1
        try:
            await until("ready again after agent restart", lambda: ready(3))
        except AssertionError:
            print([(r.id, r.node, r.desired_state, r.observed_state, r.message) for r in await replicas()])
            print(procs.log(n1)[-3000:])
            print(procs.log("placement")[-3000:])
            raise
        assert {r.id for r in await replicas()} == before
        assert len(one_process_per_replica()) == 3

        # Bad input: a second agent claiming n1 while n1's agent is live is refused, naming the node.
        impostor = procs.spawn(
            "impostor", "--placement", address, "--node-name", n1, "--fake-gpus", "1xH100",
            "--state-dir", str(procs.tmp / "impostor"), module="opscale.agent",
        )  # fmt: skip

        async def refused() -> bool:
            return f"node '{n1}' is held by another live agent session" in procs.log("impostor")

        await until("impostor refused", refused, timeout_s=15)
        impostor.kill()
        assert len(one_process_per_replica()) == 3

        # 6. n2's host dies for good (agent and its workers): its replicas are re-placed on n1.
        on_n2 = {r.id for r in await replicas() if r.node == n2}
        agents[n2].kill()
        for pid, env in workers_of({n2}).items():
            if env["OPSCALE_NODE"] == n2:
                os.kill(pid, signal.SIGKILL)
        procs.nodes.discard(n2)

        async def moved() -> bool:
            node = (await stub.GetNode(pb.GetNodeRequest(name=n2))).node
            live = [r for r in await replicas() if r.desired_state == pb.REPLICA_DESIRED_STATE_RUNNING]
            return (
                node.status == pb.NODE_STATUS_LOST
                and await ready(3)
                and all(r.node == n1 for r in live)
                and not ({r.id for r in live} & on_n2)
            )

        await until("replicas of the lost node re-placed", moved)
        procs.nodes.add(n2)
        assert len(one_process_per_replica()) == 3
    finally:
        await channel.close()
