"""The chaos suite's control plane: real `opscale serve` processes (ingest, two decision replicas,
placement) and two agents with fake GPUs running real workers, on a private PostgreSQL and Redis,
under SDK load. Every process logs to its own file; each fault is applied to exactly one of them.

Ports are chosen once and kept across restarts, so a restarted service is found where the SDK and the
agents already look. Everything started here is killed at the end, pass or fail, and so are the
workers of our nodes (found by their OPSCALE_NODE environment).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.sdk import OpscaleClient
from tests.chaos.servers import PrivatePostgres, PrivateRedis, free_port, wait_port
from tests.e2e.test_agents_processes import workers_of

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "chaos"
REPLICAS = 4  # static size of the one pool, over 2 agents x 3 fake GPUs
# Timeouts short enough for a suite of minutes, long enough for a loaded 2-core machine: a lost node
# takes 10 s without heartbeats (the default), agents beat every 0.5 s.
ENV = {
    "OPSCALE_HEARTBEAT_INTERVAL_S": "0.5",
    "OPSCALE_LOST_TIMEOUT_S": "10",
    "OPSCALE_RECONCILE_INTERVAL_S": "0.5",
    "OPSCALE_COMMAND_RESEND_S": "2",
    "OPSCALE_DRAIN_GRACE_S": "2",
    "OPSCALE_STOP_GRACE_S": "2",
    "OPSCALE_METRICS_PORT": "0",
    "PYTHONUNBUFFERED": "1",
}
SPEC = (
    f"name: {DEPLOYMENT}\n"
    "model: {preset: llama3-8b}\n"
    "mode: colocated\n"
    "policy: static\n"
    "interval_s: 1\n"
    "slo: {ttft_ms: 2000, tbt_ms: 100}\n"
    f"params: {{pools: [{{pool: {{stage: serving, operator: model}}, replicas: {REPLICAS}}}]}}\n"
)
READY = re.compile(r"opscale ready: ")
AGENT_READY = re.compile(r"opscale agent ready: node (\S+)")


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


@dataclass
class Stack:
    tmp: Path
    pg: PrivatePostgres
    redis: PrivateRedis
    procs: dict[str, Proc] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    ports: dict[str, int] = field(default_factory=dict)

    # ----- processes ------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **ENV,
            "OPSCALE_DATABASE_URL": self.pg.url,
            "OPSCALE_COUNTERS_URL": self.redis.url,
            "OPSCALE_PLACEMENT_ADDRESS": f"127.0.0.1:{self.ports['placement']}",
        }

    def start(self, name: str, ready: re.Pattern[str] = READY, timeout_s: float = 90) -> Proc:
        proc = self.procs[name]
        offset = proc.log.stat().st_size if proc.log.exists() else 0
        with proc.log.open("ab") as out:
            out.write(f"--- start {time.time():.3f}\n".encode())
            out.flush()
            proc.popen = subprocess.Popen(
                [sys.executable, "-m", *proc.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                cwd=self.tmp,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready.search(self.log_since(name, offset)):
                return proc
            if proc.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{name} never became ready:\n{self.log_since(name, offset)[-3000:]}")

    def add_service(self, name: str, service: str) -> Proc:
        port = self.ports.setdefault(name, free_port())
        argv = ["opscale.cli.main", "serve", service, "--port", str(port)]
        self.procs[name] = Proc(name, argv, self.tmp / f"{name}.log")
        return self.start(name)

    def add_agent(self, node: str) -> Proc:
        self.nodes.add(node)
        argv = ["opscale.agent", "--node-name", node, "--fake-gpus", "3xH100", "--restart-backoff-s", "0.2",
                "--label", "zone=z1", "--state-dir", str(self.tmp / f"state-{node}")]  # fmt: skip
        self.procs[node] = Proc(node, argv, self.tmp / f"{node}.log")
        return self.start(node, AGENT_READY)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        proc = self.procs[name]
        assert proc.popen is not None and proc.popen.poll() is None, f"{name} is not running"
        pid = proc.pid
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            proc.popen.wait(timeout=30)
        return pid

    def log_since(self, name: str, offset: int = 0) -> str:
        path = self.procs[name].log
        if not path.exists():
            return ""
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def log_offsets(self) -> dict[str, int]:
        return {n: (p.log.stat().st_size if p.log.exists() else 0) for n, p in self.procs.items()}

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.popen.pid, signal.SIGCONT)
                proc.popen.kill()
                proc.popen.wait(timeout=30)
        for pid in workers_of(self.nodes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ----- what the suite observes ----------------------------------------------------------------

    def workers(self) -> dict[str, list[int]]:
        """Live worker processes of our nodes: replica id -> pids (more than one: a twin)."""
        out: dict[str, list[int]] = {}
        for pid, environ in workers_of(self.nodes).items():
            out.setdefault(environ["OPSCALE_REPLICA_ID"], []).append(pid)
        return out

    def placement(self) -> placement_pb2_grpc.PlacementServiceStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.ports['placement']}")
        return placement_pb2_grpc.PlacementServiceStub(channel)

    def ready_replicas(self) -> set[str] | None:
        """Ids of running replicas placement reports ready, or None when placement does not answer."""
        try:
            reply = self.placement().GetReplicas(ppb.GetReplicasRequest(deployment=DEPLOYMENT), timeout=2)
        except grpc.RpcError:
            return None
        return {
            r.id
            for r in reply.replicas
            if r.desired_state == ppb.REPLICA_DESIRED_STATE_RUNNING
            and r.observed_state == ppb.REPLICA_OBSERVED_STATE_READY
        }

    def latest_decision(self) -> dpb.Decision | None:
        """The newest decision any decision replica reports (the ledger is shared)."""
        for name in ("decision-a", "decision-b"):
            proc = self.procs.get(name)
            if proc is None or proc.popen is None or proc.popen.poll() is not None:
                continue
            with grpc.insecure_channel(f"127.0.0.1:{self.ports[name]}") as channel:
                stub = decision_pb2_grpc.DecisionServiceStub(channel)
                try:
                    reply: dpb.GetDecisionResponse = stub.GetDecision(
                        dpb.GetDecisionRequest(deployment=DEPLOYMENT), timeout=1
                    )
                except grpc.RpcError:
                    continue
                return reply.decision
        return None

    def leader(self) -> str:
        """The decision process that made the latest decision (its replica id carries its pid)."""
        decision = self.latest_decision()
        assert decision is not None and decision.leader_id, "no decision yet"
        for name in ("decision-a", "decision-b"):
            if f"-{self.procs[name].pid}-" in decision.leader_id:
                return name
        raise AssertionError(f"leader {decision.leader_id} is none of our decision processes")

    def stored_arrivals(self) -> int | None:
        with grpc.insecure_channel(f"127.0.0.1:{self.ports['ingest']}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            try:
                reply = stub.GetWindowSummary(
                    ingest_pb2.GetWindowSummaryRequest(deployment=DEPLOYMENT, window_s=3600), timeout=2
                )
            except grpc.RpcError:
                return None
            return int(reply.summary.arrivals)


def build_stack(tmp: Path) -> Stack:
    pg, redis = PrivatePostgres(), PrivateRedis()
    stack = Stack(tmp, pg, redis)
    try:
        pg.start()
        redis.start()
        from opscale.db.migrate import upgrade

        upgrade(pg.url)
        stack.ports["placement"] = free_port()
        stack.add_service("placement", "placement")
        stack.add_service("ingest", "ingest")
        stack.add_service("decision-a", "decision")
        spec = tmp / "spec.yaml"
        spec.write_text(SPEC)
        applied = subprocess.run(
            [sys.executable, "-m", "opscale.cli.main", "apply", "-f", str(spec),
             "--decision", f"127.0.0.1:{stack.ports['decision-a']}"],
            capture_output=True, text=True, timeout=60, cwd=tmp, env=stack.env(),
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        stack.add_service("decision-b", "decision")
        suffix = uuid.uuid4().hex[:6]
        for node in (f"c1-{suffix}", f"c2-{suffix}"):
            stack.add_agent(node)
        wait_port(stack.ports["ingest"], 10)
        return stack
    except BaseException:
        stack.close()
        pg.close()
        redis.close()
        raise


class Load:
    """SDK load from a thread: ``rate`` arrivals per second through the real client, counted when
    the client accepted them (``record_*`` returned True)."""

    def __init__(self, ingest_address: str, rate: float = 100.0) -> None:
        # Retries far longer than any outage here: a sample is dropped only by a bug, never by a wait.
        self.client = OpscaleClient(ingest_address, deployment=DEPLOYMENT, flush_interval_s=0.2,
                                    max_retry_s=600.0, rpc_timeout_s=2.0)  # fmt: skip
        self.recorded = 0
        self._rate = rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

        self._paused = threading.Event()

    def start(self) -> None:
        self.client.__enter__()
        self._thread.start()

    def pause(self) -> None:
        self._paused.set()
        time.sleep(0.1)  # let a step in progress finish

    def resume(self) -> None:
        self._paused.clear()

    def _run(self) -> None:
        step = 0.05
        per_step = max(1, round(self._rate * step))
        while not self._stop.wait(step):
            if self._paused.is_set():
                continue
            for _ in range(per_step):
                if self.client.record_arrival(500, 100):
                    self.recorded += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close(flush_timeout_s=10)


def twins(snapshot: dict[str, list[int]]) -> int:
    """Processes beyond one per replica."""
    return sum(len(pids) - 1 for pids in snapshot.values())


class Sampler:
    """Samples the worker processes every 0.2 s while a fault plays out: the most processes alive at
    once beyond the replicas' count (overlap, e.g. a replacement started while the original lives)."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.max_processes = 0
        self.max_twins = 0
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            snap = self._stack.workers()
            self.max_processes = max(self.max_processes, sum(len(p) for p in snap.values()))
            self.max_twins = max(self.max_twins, twins(snap))
