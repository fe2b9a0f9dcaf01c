"""The demo's control plane: the three services in this process (as `opscale up` runs them) and one
node agent subprocess with fake GPUs that starts real `opscale worker` processes.

Placement is started first on a free port so decision can be told where it is (decision hands its
desired counts to placement over gRPC, as in production). Teardown stops the workers through the
control plane (freeze, then zero replicas, then wait for the processes to exit, drained) before the
agent gets SIGTERM, which would stop any left as well (without draining them). Workers that still live
after that are found by their ``OPSCALE_NODE`` environment and killed, and
counted, so a leak is visible in the report rather than silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from opscale.api.common.v1 import common_pb2
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.config import Settings
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.services.catalog import SERVICES
from opscale.services.runtime import Runtime, open_runtime, prepare_embedded_database
from opscale.telemetry import Telemetry, build_telemetry

AGENT_READY = re.compile(r"opscale agent ready: node (\S+)")
# Short control-loop timings: the demo is minutes long, so seconds-long grace periods would dominate.
FAST_ENV = {
    "OPSCALE_HEARTBEAT_INTERVAL_S": "0.5",
    "OPSCALE_RECONCILE_INTERVAL_S": "0.5",
    "OPSCALE_STOP_GRACE_S": "2",
    "OPSCALE_METRICS_PORT": "0",
}
#: The same for the in-process services (passed as settings overrides).
FAST_SETTINGS = {"reconcile_interval_s": 0.5, "drain_grace_s": 2.0, "shutdown_grace_s": 2.0}


@dataclass
class Stack:
    settings: Settings
    out: Path
    node: str = field(default_factory=lambda: f"demo-{uuid.uuid4().hex[:6]}")
    telemetry: Telemetry | None = None
    runtime: Runtime | None = None
    running: list[RunningService] = field(default_factory=list)
    agent: subprocess.Popen[str] | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    killed_leftovers: int = 0
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    # --- start ---------------------------------------------------------------------------------------

    async def start_services(self) -> None:
        cfg = self.settings
        prepare_embedded_database(cfg.database_url)
        self.telemetry = build_telemetry("opscale", otlp_endpoint=cfg.otlp_endpoint, per_service=True)
        self.runtime = await open_runtime(cfg, self.telemetry)
        host = cfg.listen_host
        placement = SERVICES["placement"]
        self.running.append(
            await start_service(placement.build(self._runtime_of("placement")), host, 0, self.telemetry)
        )
        self.addresses["placement"] = f"{host}:{self.running[0].port}"
        self.runtime.settings = cfg.model_copy(update={"placement_address": self.addresses["placement"]})
        for name in ("ingest", "decision"):
            svc = await start_service(SERVICES[name].build(self._runtime_of(name)), host, 0, self.telemetry)
            self.running.append(svc)
            self.addresses[name] = f"{host}:{svc.port}"

    def _runtime_of(self, service: str) -> Runtime:
        """The shared runtime, with the telemetry that traces as ``service`` (its own service.name)."""
        assert self.runtime is not None and self.telemetry is not None
        return dataclasses.replace(self.runtime, telemetry=self.telemetry.service(service))

    def start_agent(self, fake_gpus: str, timeout_s: float = 60.0) -> None:
        state = self.out / "agent"
        # A previous run's pid records belong to another node name; the fresh agent starts with none.
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True, exist_ok=True)
        log = (self.out / "agent.log").open("a")
        args = [
            sys.executable,
            "-m",
            "opscale.agent",
            "--placement",
            self.addresses["placement"],
            "--node-name",
            self.node,
            "--fake-gpus",
            fake_gpus,
            "--state-dir",
            str(state),
        ]
        env = {**os.environ, **FAST_ENV, "OPSCALE_DATABASE_URL": self.settings.database_url}
        # Its own session: a Ctrl-C at the terminal reaches the demo only, which stops the workers through
        # the control plane (the agent must still be alive for that) and then the agent.
        self.agent = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True
        )
        assert self.agent.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.agent.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise RuntimeError(
                    f"the agent exited ({self.agent.returncode}); see {self.out / 'agent.log'}"
                )
            if sel.select(timeout=0.2) and AGENT_READY.search(self.agent.stdout.readline()):
                sel.close()
                return
        sel.close()
        raise RuntimeError(
            f"the agent did not register within {timeout_s:.0f} s; see {self.out / 'agent.log'}"
        )

    def channel(self, service: str) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(self.addresses[service])
        self.channels.append(ch)
        return ch

    async def create_deployment(self, spec: dpb.DeploymentSpec) -> None:
        stub = decision_pb2_grpc.DecisionServiceStub(self.channel("decision"))
        request = dpb.CreateDeploymentRequest(spec=spec, actor="opscale-demo")
        try:
            await stub.CreateDeployment(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            # A shared database (--postgres-redis) keeps the previous run's deployment: start afresh.
            await stub.DeleteDeployment(
                dpb.DeleteDeploymentRequest(name=spec.name, actor="opscale-demo"), timeout=10
            )
            await stub.CreateDeployment(request, timeout=10)

    # --- stop ----------------------------------------------------------------------------------------

    async def stop_workers(self, deployment: str, timeout_s: float = 20.0) -> None:
        """Stop decision and ingest first (so no decision re-applies a plan), then ask placement for zero
        replicas of every pool and wait until the agent has drained and stopped every worker."""
        for svc in [s for s in self.running if s.name != "placement"]:
            await stop_service(svc, self.settings.shutdown_grace_s)
            self.running.remove(svc)
        if "placement" not in self.addresses:
            return
        placement = placement_pb2_grpc.PlacementServiceStub(self.channel("placement"))
        request = ppb.GetReplicasRequest(deployment=deployment)
        reps = (await placement.GetReplicas(request, timeout=5)).replicas
        pools = {(r.pool.stage, r.pool.operator) for r in reps}
        zero = [
            common_pb2.PoolPlan(pool=common_pb2.PoolKey(stage=s, operator=o), replicas=0, gpus_per_replica=1)
            for s, o in sorted(pools)
        ]
        if zero:
            await placement.ApplyDesired(
                ppb.ApplyDesiredRequest(deployment=deployment, pools=zero), timeout=5
            )
        deadline = time.monotonic() + timeout_s
        while worker_pids({self.node}) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)

    def stop_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(timeout=5)
        for pid in worker_pids({self.node}):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                self.killed_leftovers += 1

    async def stop_services(self) -> None:
        for ch in self.channels:
            await ch.close(None)
        self.channels.clear()
        grace = self.settings.shutdown_grace_s
        for svc in reversed(self.running):
            await stop_service(svc, grace)
        self.running.clear()
        if self.runtime is not None:
            await self.runtime.close()
            self.runtime = None
        if self.telemetry is not None:
            self.telemetry.shutdown()
            self.telemetry = None


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return {}
    if state in ("Z", "X"):
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def worker_pids(nodes: set[str]) -> list[int]:
    """Live worker processes started by agents of ``nodes`` (the agent sets OPSCALE_NODE and
    OPSCALE_REPLICA_ID in every process it launches). Linux /proc only; elsewhere none are found."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    out = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            env = _environ(int(entry.name))
            if env.get("OPSCALE_NODE") in nodes and "OPSCALE_REPLICA_ID" in env:
                out.append(int(entry.name))
    return out
