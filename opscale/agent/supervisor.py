"""The agent's process supervisor: start, probe, drain, stop, restart and adopt operator processes.

Declarative: commands name ``(replica_id, generation)``, and a generation the supervisor has already
handled is acknowledged again without acting (placement re-sends commands whose ack it never saw).

Processes run in their own session (``start_new_session``): the agent can signal the whole process
group of a replica, and an agent that dies (SIGKILL, a crash) does not take its replicas with it. An
agent that is *stopped* stops them too, unless told to keep them for an upgrade. After a
restart the agent adopts every process whose (pid, start time) in its state file is still alive, and
never starts a second copy of a replica it already runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opscale.actuation import DrainReplica, ReplicaCommand, StartReplica
from opscale.agent.state import ReplicaState, StateFile, proc_start_time, same_process
from opscale.agent.templates import Template, placeholder_values, sharing_env
from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.clock import Clock, SystemClock
from opscale.errors import InvalidArgument
from opscale.grpcutil.client import PLAINTEXT, ClientSecurity, instrumented_channel

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.5


class Phase(enum.Enum):
    STARTING = apb.REPLICA_PROCESS_STATE_STARTING
    READY = apb.REPLICA_PROCESS_STATE_READY
    DRAINING = apb.REPLICA_PROCESS_STATE_DRAINING
    STOPPED = apb.REPLICA_PROCESS_STATE_STOPPED
    CRASHED = apb.REPLICA_PROCESS_STATE_CRASHED
    FAILED = apb.REPLICA_PROCESS_STATE_FAILED


@dataclass
class Managed:
    state: ReplicaState
    template: Template
    values: dict[str, str]
    phase: Phase = Phase.STARTING
    proc: subprocess.Popen[bytes] | None = None
    next_restart_s: float = 0.0
    drained: bool = False
    exit_code: int = 0
    message: str = ""
    busy: bool = False  # a stop or drain is in progress
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Supervisor:
    def __init__(
        self,
        node: str,
        templates: Mapping[str, Template],
        state_dir: Path,
        gpu_indices: frozenset[int],
        emit: Callable[[apb.ReplicaStatus], None],
        *,
        max_restarts: int = 3,
        restart_backoff_s: float = 1.0,
        advertise_host: str = "127.0.0.1",
        clock: Clock | None = None,
        base_env: Mapping[str, str] | None = None,
        env_allowlist: frozenset[str] = frozenset(),
        worker_env: Mapping[str, str] | None = None,
        worker_security: ClientSecurity = PLAINTEXT,
    ) -> None:
        self.node = node
        self.templates = dict(templates)
        self._state = StateFile(state_dir)
        self._log_dir = state_dir / "logs"
        self._gpus = gpu_indices
        self._emit = emit
        self._max_restarts = max_restarts
        self._backoff_s = restart_backoff_s
        self._host = advertise_host
        self._clock = clock or SystemClock()
        self._base_env = dict(base_env if base_env is not None else os.environ)
        # What a start command may add to a replica's environment: the agent's own config decides,
        # never the command (PYTHONWARNINGS, PERL5OPT, LD_PRELOAD, BROWSER… would run code as the agent).
        self._env_allowlist = env_allowlist
        # Set by the agent itself on every replica it starts (the worker's TLS files, say).
        self._worker_env = dict(worker_env or {})
        self._worker_security = worker_security
        self.replicas: dict[str, Managed] = {}
        self._handled: dict[str, int] = {}  # replica -> highest generation acted on (incl. stopped ones)

    # ----- adoption -------------------------------------------------------------------------------

    def adopt(self) -> list[apb.RunningReplica]:
        """Adopt the processes of the state file that are still ours; forget the rest."""
        for replica_id, st in self._state.load().items():
            template = self.templates.get(st.template)
            if template is None or not same_process(st.pid, st.start_time):
                log.info(
                    "replica %s (pid %s) is gone or its template is no longer allowed", replica_id, st.pid
                )
                continue
            values = self._values(st)
            managed = Managed(st, template, values, phase=Phase.STARTING, drained=False)
            if st.draining:
                managed.phase = Phase.DRAINING
            self.replicas[replica_id] = managed
            self._handled[replica_id] = st.generation
            log.info("adopted replica %s (pid %d)", replica_id, st.pid)
        self._save()
        return [
            apb.RunningReplica(
                replica_id=m.state.replica_id,
                generation=m.state.generation,
                pid=m.state.pid,
                state=m.phase.value,
            )
            for m in self.replicas.values()
        ]

    def _values(self, st: ReplicaState) -> dict[str, str]:
        return placeholder_values(
            replica_id=st.replica_id,
            generation=st.generation,
            port=st.port,
            deployment=st.deployment,
            stage=st.stage,
            operator=st.operator,
            gpu_indices=tuple(st.gpu_indices),
            node=self.node,
            args=st.args,
        )

    def _save(self) -> None:
        self._state.save({k: m.state for k, m in self.replicas.items()})

    # ----- reporting ------------------------------------------------------------------------------

    def status(self, managed: Managed) -> apb.ReplicaStatus:
        st = managed.state
        return apb.ReplicaStatus(
            replica_id=st.replica_id,
            generation=st.generation,
            state=managed.phase.value,
            pid=st.pid,
            restarts=st.restarts,
            message=managed.message,
            endpoint=f"{self._host}:{st.port}",
            timestamp_ms=int(self._clock.now() * 1000),
            drained=managed.drained,
            exit_code=managed.exit_code,
        )

    def _report(self, managed: Managed) -> None:
        self._emit(self.status(managed))

    def snapshot(self) -> list[apb.ReplicaStatus]:
        return [self.status(m) for m in self.replicas.values()]

    def busy_gpus(self) -> frozenset[int]:
        return frozenset(i for m in self.replicas.values() for i in m.state.gpu_indices)

    # ----- commands -------------------------------------------------------------------------------

    async def apply(self, command: ReplicaCommand) -> tuple[apb.AckStatus, str]:
        """Act on a command; returns (AckStatus, message). A generation already handled is a no-op."""
        rid, gen = command.replica_id, command.generation
        if self._handled.get(rid, 0) >= gen:
            return apb.ACK_STATUS_ACCEPTED, "already handled"
        if isinstance(command, StartReplica):
            return await self._start(command)
        self._handled[rid] = gen
        managed = self.replicas.get(rid)
        if managed is None:
            # Nothing running under that id (never started here, or already gone): stopped is the truth.
            self._emit(
                apb.ReplicaStatus(
                    replica_id=rid,
                    generation=gen,
                    state=apb.REPLICA_PROCESS_STATE_STOPPED,
                    drained=True,
                    message="not running on this agent",
                )
            )
            return apb.ACK_STATUS_ACCEPTED, "not running"
        managed.state.generation = gen
        if isinstance(command, DrainReplica):
            self._spawn(managed, self._drain(managed, command.grace_s))
        else:
            self._spawn(managed, self._stop(managed, command.grace_s))
        return apb.ACK_STATUS_ACCEPTED, ""

    def _spawn(self, managed: Managed, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        managed.tasks.add(task)
        task.add_done_callback(managed.tasks.discard)

    async def _start(self, start: StartReplica) -> tuple[apb.AckStatus, str]:
        rid = start.replica_id
        template = self.templates.get(start.template)
        if template is None:
            allowed = ", ".join(sorted(self.templates))
            return apb.ACK_STATUS_REJECTED, (
                f"unknown launch template '{start.template}'; this agent allows: {allowed}"
            )
        refused = sorted(set(start.env) - self._env_allowlist)
        if refused:
            allowed = ", ".join(sorted(self._env_allowlist)) or "none"
            return apb.ACK_STATUS_REJECTED, (
                f"start.env: {', '.join(refused)} may not be set by a start command on this agent "
                f"(its agent_env_allowlist allows: {allowed})"
            )
        bad = [i for i in start.gpu_indices if i not in self._gpus]
        if bad or not start.gpu_indices:
            return apb.ACK_STATUS_REJECTED, (
                f"GPU indices {list(start.gpu_indices)} are not all on this node (it has "
                f"{sorted(self._gpus)})"
            )
        if rid in self.replicas:  # a newer generation of a running replica: it keeps running
            self._handled[rid] = start.generation
            return apb.ACK_STATUS_ACCEPTED, "already running"
        st = ReplicaState(
            replica_id=rid,
            generation=start.generation,
            template=template.name,
            deployment=start.deployment,
            stage=start.pool.stage,
            operator=start.pool.operator,
            gpu_indices=list(start.gpu_indices),
            args=dict(start.args),
            port=free_port(),
            env=dict(start.env),
        )
        values = self._values(st)
        try:
            template.render(values)
            sharing_env(values)
        except InvalidArgument as exc:
            return apb.ACK_STATUS_REJECTED, exc.message
        managed = Managed(st, template, values)
        try:
            self._launch(managed)
        except OSError as exc:
            return apb.ACK_STATUS_FAILED, f"could not start {template.argv[0]}: {exc}"
        self._handled[rid] = start.generation
        self.replicas[rid] = managed
        self._save()
        self._report(managed)
        return apb.ACK_STATUS_ACCEPTED, ""

    def _launch(self, managed: Managed) -> None:
        st = managed.state
        argv, template_env = managed.template.render(managed.values)
        # A state file written before the allowlist existed may hold more: only allowed names pass.
        allowed = {k: v for k, v in st.env.items() if k in self._env_allowlist}
        env = {**self._base_env, **template_env, **allowed, **self._worker_env, **sharing_env(managed.values)}
        env |= {
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in st.gpu_indices),
            "OPSCALE_REPLICA_ID": st.replica_id,
            "OPSCALE_GENERATION": str(st.generation),
            "OPSCALE_DEPLOYMENT": st.deployment,
            "OPSCALE_STAGE": st.stage,
            "OPSCALE_OPERATOR": st.operator,
            "OPSCALE_NODE": self.node,
            "OPSCALE_PORT": str(st.port),
        }
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with (self._log_dir / f"{st.replica_id}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        st.pid = proc.pid
        st.start_time = proc_start_time(proc.pid) or 0
        managed.proc = proc
        managed.phase = Phase.STARTING
        managed.exit_code = 0
        log.info("started replica %s: pid %d on GPUs %s", st.replica_id, proc.pid, st.gpu_indices)

    # ----- supervision ----------------------------------------------------------------------------

    def _alive(self, managed: Managed) -> bool:
        if managed.proc is not None:
            code = managed.proc.poll()
            if code is not None:
                managed.exit_code = code
            return code is None
        return same_process(managed.state.pid, managed.state.start_time)

    async def _probe(self, managed: Managed) -> bool:
        readiness = managed.template.readiness
        if "http" in readiness:
            url = managed.template.url(readiness, managed.values)
            try:
                await asyncio.to_thread(urllib.request.urlopen, url, timeout=PROBE_TIMEOUT_S)
                return True
            except Exception:
                return False
        if readiness.get("tcp"):
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", managed.state.port), PROBE_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True
        return True

    async def tick(self) -> None:
        """One supervision pass: crashes, restarts after back-off, readiness."""
        now = self._clock.monotonic()
        for managed in list(self.replicas.values()):
            if managed.busy or managed.phase in (Phase.STOPPED, Phase.FAILED):
                continue
            if managed.phase is Phase.CRASHED:
                if now >= managed.next_restart_s:
                    try:
                        self._launch(managed)
                        self._save()
                    except OSError as exc:
                        managed.message = f"restart failed: {exc}"
                        managed.next_restart_s = now + self._backoff_s
                    self._report(managed)
                continue
            if not self._alive(managed):
                self._crashed(managed, now)
                continue
            if managed.phase is Phase.STARTING and await self._probe(managed):
                managed.phase = Phase.READY
                managed.message = "ready"
                self._report(managed)

    def _crashed(self, managed: Managed, now: float) -> None:
        st = managed.state
        code = managed.exit_code
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if managed.phase is Phase.DRAINING:
            managed.phase, managed.drained, managed.message = Phase.STOPPED, True, f"{how} while draining"
            self._forget(managed)
            return
        st.restarts += 1
        if st.restarts > self._max_restarts:
            managed.phase = Phase.FAILED
            managed.message = (
                f"{how}; crashed {st.restarts} times, more than the {self._max_restarts} allowed"
            )
            log.warning("replica %s failed: %s", st.replica_id, managed.message)
            self._forget(managed)
            return
        delay = self._backoff_s * 2 ** (st.restarts - 1)
        managed.phase = Phase.CRASHED
        managed.next_restart_s = now + delay
        managed.message = f"{how}; restart {st.restarts} of {self._max_restarts} in {delay:.1f}s"
        managed.proc = None
        log.warning("replica %s crashed: %s", st.replica_id, managed.message)
        self._save()
        self._report(managed)

    def _forget(self, managed: Managed) -> None:
        self._report(managed)
        self.replicas.pop(managed.state.replica_id, None)
        self._save()

    async def _drain(self, managed: Managed, grace_s: float) -> None:
        managed.phase = Phase.DRAINING
        managed.state.draining = True
        managed.drained = False
        managed.message = "draining"
        self._save()
        self._report(managed)
        hook = managed.template.drain
        deadline = self._clock.monotonic() + grace_s
        try:
            if hook == "worker":
                await self._drain_worker(managed, deadline)
            elif isinstance(hook, Mapping):
                url = managed.template.url(hook, managed.values)
                request = urllib.request.Request(url, method="POST")
                await asyncio.to_thread(urllib.request.urlopen, request, timeout=max(0.1, grace_s))
        except Exception as exc:  # the drain hook failing must not keep the replica forever
            managed.message = f"drain hook failed ({exc}); drained by grace period"
            await asyncio.sleep(max(0.0, deadline - self._clock.monotonic()))
        if managed.phase is Phase.DRAINING:
            managed.drained = True
            managed.message = "drained"
            self._report(managed)

    async def _drain_worker(self, managed: Managed, deadline: float) -> None:
        from opscale.api.worker.v1 import worker_pb2, worker_pb2_grpc

        grace = max(0.0, deadline - self._clock.monotonic())
        address = f"127.0.0.1:{managed.state.port}"
        async with instrumented_channel(address, None, security=self._worker_security) as channel:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            reply = await stub.Drain(worker_pb2.DrainRequest(grace_s=grace), timeout=2)
            while reply.state != worker_pb2.WORKER_STATE_DRAINED and self._clock.monotonic() < deadline:
                await asyncio.sleep(0.1)
                status = await stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=2)
                reply = worker_pb2.DrainResponse(state=status.state, in_flight=status.in_flight)

    async def _stop(self, managed: Managed, grace_s: float) -> None:
        managed.busy = True
        for task in list(managed.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await self.terminate(managed, grace_s)
        managed.phase, managed.drained = Phase.STOPPED, True
        managed.message = "stopped"
        self._forget(managed)

    async def terminate(self, managed: Managed, grace_s: float) -> None:
        """SIGTERM to the replica's process group, SIGKILL after ``grace_s`` if it is still there."""
        st = managed.state
        if not self._alive(managed):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(st.pid, signal.SIGTERM)
        deadline = self._clock.monotonic() + grace_s
        while self._alive(managed) and self._clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._alive(managed):
            log.warning("replica %s ignored SIGTERM for %.1fs: SIGKILL", st.replica_id, grace_s)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(st.pid, signal.SIGKILL)
            while self._alive(managed):
                await asyncio.sleep(0.02)

    async def stop_ids(self, replica_ids: list[str], grace_s: float) -> None:
        """Stop replicas placement does not want (from the register ack)."""
        for rid in replica_ids:
            managed = self.replicas.get(rid)
            if managed is not None:
                self._spawn(managed, self._stop(managed, grace_s))

    async def close(self, *, keep_workers: bool = False, grace_s: float = 10.0) -> None:
        """The agent is exiting: end our tasks, then stop every replica (SIGTERM, SIGKILL after
        ``grace_s``, all at once) unless ``keep_workers``, where they keep running for the next agent
        to adopt (an upgrade). Without this an agent that stopped left orphans nobody owned (issue 14)."""
        for managed in self.replicas.values():
            for task in list(managed.tasks):
                task.cancel()
        if not keep_workers:
            stopping = list(self.replicas.values())
            await asyncio.gather(*(self.terminate(m, grace_s) for m in stopping))
            for managed in stopping:
                log.info("stopped replica %s (pid %d): the agent is stopping", managed.state.replica_id,
                         managed.state.pid)  # fmt: skip
                self.replicas.pop(managed.state.replica_id, None)
        self._save()
