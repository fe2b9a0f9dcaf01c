"""The node agent: discover GPUs, adopt what it started before, hold one stream to placement.

One ``Connect`` stream at a time. It registers (node identity, GPUs, labels, allowed templates, the
replicas it runs), then sends heartbeats with GPU telemetry, command acks and replica status while it
receives commands. A broken stream is re-opened after a jittered exponential back-off; the agent keeps
its session id for the life of the process, so placement sees a resumption, and it re-sends the status
of every replica after each registration (level-triggered: nothing said on a dead stream is assumed
heard).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
from opentelemetry import trace

from opscale.agent.backoff import Backoff
from opscale.agent.gpus import GpuDiscovery, GpuSample
from opscale.agent.state import StateLock
from opscale.agent.supervisor import Supervisor
from opscale.agent.templates import Template
from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.common.v1 import common_pb2
from opscale.clock import Clock, SystemClock
from opscale.errors import InvalidArgument
from opscale.grpcutil.client import PLAINTEXT, ClientSecurity, instrumented_channel
from opscale.grpcutil.tls import TlsFiles
from opscale.pools import PoolKey
from opscale.telemetry import Telemetry, context_from
from opscale.wire.commands import command_from_pb
from opscale.wire.pools import pool_to_pb

#: Trailing metadata key by which a placement replica that does not lead names the leader
#: (opscale/services/placement/leader.py; the agent does not import the service).
LEADER_METADATA = "opscale-leader"

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 0.1
AGENT_VERSION = "0.1.0"


@dataclass(frozen=True)
class AgentConfig:
    node: str
    placement_address: str
    state_dir: Path
    templates: dict[str, Template]
    labels: dict[str, str] = field(default_factory=dict)
    max_restarts: int = 3
    restart_backoff_s: float = 1.0
    stop_grace_s: float = 10.0
    advertise_host: str = "127.0.0.1"
    ingest_address: str = ""
    # TLS and token toward placement and ingest; the same TLS serves its workers' control ports.
    security: ClientSecurity = PLAINTEXT
    # Environment variables a start command may set on a replica (the agent's own config decides).
    env_allowlist: frozenset[str] = frozenset()
    # On a clean stop leave the workers running for the next agent to adopt (an upgrade); by default
    # an agent that stops stops its workers, so none outlive it unowned.
    keep_workers: bool = False


def worker_tls_env(tls: TlsFiles) -> dict[str, str]:
    """The agent's TLS files for the workers it starts (``opscale worker`` reads these variables), so
    a worker's control port serves with the node's certificate and the agent can drain it."""
    files = {"OPSCALE_TLS_CERT_FILE": tls.cert_file, "OPSCALE_TLS_KEY_FILE": tls.key_file}
    files["OPSCALE_TLS_CA_FILE"] = tls.ca_file
    return {name: str(path) for name, path in files.items() if path is not None}


def leader_of(exc: grpc.aio.AioRpcError) -> str:
    """The leader's address a placement follower named in its trailing metadata ('' if none)."""
    # grpc.aio hands a Metadata of (key, value) pairs; its stubs type it as a tuple of _Metadatum.
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    return next((v for k, v in pairs if k == LEADER_METADATA and isinstance(v, str)), "")


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        discovery: GpuDiscovery,
        *,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        on_registered: Callable[[apb.RegisterAck, int], None] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self._tracer = telemetry.tracer("opscale.agent") if telemetry is not None else trace.NoOpTracer()
        self.discovery = discovery
        self.session_id = uuid.uuid4().hex
        self._clock = clock or SystemClock()
        self._backoff = backoff or Backoff()
        self._on_registered = on_registered
        self._outbox: asyncio.Queue[apb.ConnectRequest | None] | None = None
        self._seq = 0
        self._ingest: grpc.aio.Channel | None = None
        self._ingest_warned_s = -1e9
        self.registrations = 0
        self.placement_address = config.placement_address  # where the next stream goes (the leader's)
        self.gpus = discovery.discover()
        self.gpu_samples: list[GpuSample] = []  # the last heartbeat's, for /metrics
        self.commands: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, ack status)
        # Workers serve their control port with the node's certificate when it has one (else plaintext
        # on loopback), and the agent drains them with it.
        worker_tls = config.security.tls if config.security.tls.serves_tls else TlsFiles()
        self.supervisor = Supervisor(
            config.node,
            config.templates,
            config.state_dir,
            frozenset(g.index for g in self.gpus),
            self._emit,
            max_restarts=config.max_restarts,
            restart_backoff_s=config.restart_backoff_s,
            advertise_host=config.advertise_host,
            clock=self._clock,
            env_allowlist=config.env_allowlist,
            worker_env=worker_tls_env(worker_tls),
            worker_security=ClientSecurity(worker_tls),
        )

    @property
    def connected(self) -> bool:
        """Registered with placement on a live stream."""
        return self._outbox is not None

    def _emit(self, status: apb.ReplicaStatus) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(apb.ConnectRequest(status=status))

    async def run(self, stopping: asyncio.Event) -> None:
        """Own the state directory (``StateDirLocked`` if another agent does), adopt, stay connected
        until ``stopping``; then stop the workers (or keep them, ``keep_workers``) and let go."""
        lock = StateLock(self.config.state_dir)
        lock.acquire(f"the agent of node {self.config.node}")
        try:
            await self._run(stopping)
        finally:
            lock.release()

    async def _run(self, stopping: asyncio.Event) -> None:
        self.supervisor.adopt()
        supervise = asyncio.create_task(self._supervise(stopping), name="agent-supervise")
        try:
            while not stopping.is_set():
                leader = ""
                try:
                    await self._session(stopping)
                except grpc.aio.AioRpcError as exc:
                    leader = leader_of(exc)
                    log.warning("placement stream ended: %s %s", exc.code().name, exc.details())
                except (OSError, ConnectionError) as exc:
                    log.warning("placement stream failed: %s", exc)
                if stopping.is_set():
                    break
                configured = self.config.placement_address
                if leader and leader != configured and self.placement_address == configured:
                    # A placement replica that does not lead named the one that does: go there now. Only
                    # from the configured address, so two replicas naming each other mid-hand-over cost
                    # a back-off, never a tight loop.
                    log.info("following placement's leader to %s", leader)
                    self.placement_address = leader
                    continue
                # Anything else (the leader went away, a plain failure): back to the configured address,
                # which reaches some placement replica; it serves or redirects.
                self.placement_address = configured
                delay = self._backoff.next_delay()
                log.info("reconnecting to placement in %.2fs", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
        finally:
            supervise.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervise
            await self.supervisor.close(
                keep_workers=self.config.keep_workers, grace_s=self.config.stop_grace_s
            )
            if self._ingest is not None:
                await self._ingest.close(None)

    async def _supervise(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.supervisor.tick()
            except Exception:
                log.exception("supervision pass failed")
            await asyncio.sleep(SUPERVISE_INTERVAL_S)

    def _register(self) -> apb.Register:
        running = [
            apb.RunningReplica(
                replica_id=m.state.replica_id,
                generation=m.state.generation,
                pid=m.state.pid,
                state=m.phase.value,
            )
            for m in self.supervisor.replicas.values()
        ]
        return apb.Register(
            node_name=self.config.node,
            session_id=self.session_id,
            gpus=[
                apb.GpuInfo(
                    index=g.index,
                    uuid=g.uuid,
                    gpu_type=g.gpu_type,
                    memory_bytes=g.memory_bytes,
                    nvlink_domain=g.nvlink_domain,
                )
                for g in self.gpus
            ],
            labels=self.config.labels,
            agent_version=AGENT_VERSION,
            templates=sorted(self.config.templates),
            running=running,
            last_seq=self._seq,
        )

    async def _session(self, stopping: asyncio.Event) -> None:
        outbox: asyncio.Queue[apb.ConnectRequest | None] = asyncio.Queue()
        outbox.put_nowait(apb.ConnectRequest(register=self._register()))

        async def requests() -> AsyncIterator[apb.ConnectRequest]:
            while (item := await outbox.get()) is not None:
                yield item

        channel = instrumented_channel(self.placement_address, None, security=self.config.security)
        async with channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(requests())
            try:
                first = await call.read()
                if (
                    not isinstance(first, apb.ConnectResponse)
                    or first.WhichOneof("message") != "register_ack"
                ):
                    raise ConnectionError("placement closed the stream before acknowledging registration")
                ack = first.register_ack
                self._backoff.reset()
                self.registrations += 1
                self._outbox = outbox
                await self.supervisor.stop_ids(list(ack.stop_replica_ids), self.config.stop_grace_s)
                for status in self.supervisor.snapshot():
                    outbox.put_nowait(apb.ConnectRequest(status=status))
                if self._on_registered is not None:
                    self._on_registered(ack, len(self.supervisor.replicas))
                interval = ack.heartbeat_interval_s or 1.0
                beats = asyncio.create_task(self._heartbeats(outbox, interval), name="agent-heartbeats")
                stop_wait = asyncio.create_task(stopping.wait())
                reader = asyncio.create_task(self._read(call, outbox), name="agent-reader")
                try:
                    done, _ = await asyncio.wait(
                        {reader, stop_wait, beats}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        if task is not stop_wait and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                finally:
                    for task in (beats, stop_wait, reader):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                            await task
            finally:
                self._outbox = None
                outbox.put_nowait(None)
                call.cancel()

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[apb.ConnectRequest, apb.ConnectResponse],
        outbox: asyncio.Queue[apb.ConnectRequest | None],
    ) -> None:
        while True:
            response = await call.read()
            if not isinstance(response, apb.ConnectResponse):  # grpc.aio.EOF
                raise ConnectionError("placement ended the stream")
            if response.WhichOneof("message") != "command":
                continue
            command = response.command
            status, message = await self._apply(command)
            ack = apb.CommandAck(
                command_id=command.command_id,
                replica_id=command.replica_id,
                generation=command.generation,
                status=status,
                message=message,
            )
            outbox.put_nowait(apb.ConnectRequest(ack=ack))

    async def _apply(self, command: apb.Command) -> tuple[apb.AckStatus, str]:
        """Act on one command inside an ``agent.command`` span whose parent is the placement span that
        queued it (carried in ``trace_context``), so a decision, its placement and this are one trace."""
        kind = command.WhichOneof("action") or "none"
        attributes: dict[str, str | int] = {
            "node": self.config.node,
            "command_id": command.command_id,
            "replica_id": command.replica_id,
            "generation": command.generation,
            "kind": kind,
        }
        with self._tracer.start_as_current_span(
            "agent.command",
            context=context_from(command.trace_context),
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            status: apb.AckStatus
            try:
                status, message = await self.supervisor.apply(command_from_pb(command))
            except InvalidArgument as exc:  # a command this agent cannot read: refuse it, say why
                status, message = apb.ACK_STATUS_REJECTED, exc.message
            except Exception as exc:  # a bug acting on one command must not kill the stream
                log.exception(
                    "command %s failed", command.command_id, extra={"replica_id": command.replica_id}
                )
                span.record_exception(exc)
                status, message = apb.ACK_STATUS_FAILED, f"agent error: {exc}"
            span.set_attribute("ack_status", apb.AckStatus.Name(status))
            self.commands[kind, apb.AckStatus.Name(status).removeprefix("ACK_STATUS_").lower()] += 1
            if status != apb.ACK_STATUS_ACCEPTED:
                span.set_status(trace.Status(trace.StatusCode.ERROR, message))
            return status, message

    async def _heartbeats(self, outbox: asyncio.Queue[apb.ConnectRequest | None], interval_s: float) -> None:
        while True:
            self._seq += 1
            samples = await asyncio.to_thread(self.discovery.sample, self.supervisor.busy_gpus())
            self.gpu_samples = list(samples)
            now_ms = int(self._clock.now() * 1000)
            telemetry = [
                common_pb2.GpuTelemetry(
                    index=s.index,
                    uuid=s.uuid,
                    utilization_fraction=s.utilization_fraction,
                    memory_used_bytes=s.memory_used_bytes,
                    memory_total_bytes=s.memory_total_bytes,
                    power_watts=s.power_watts,
                    timestamp_ms=now_ms,
                )
                for s in samples
            ]
            beat = apb.Heartbeat(seq=self._seq, timestamp_ms=now_ms, gpus=telemetry)
            outbox.put_nowait(apb.ConnectRequest(heartbeat=beat))
            if self.config.ingest_address:
                await self._push_to_ingest(telemetry)
            await asyncio.sleep(interval_s)

    async def _push_to_ingest(self, telemetry: list[common_pb2.GpuTelemetry]) -> None:
        """GPU telemetry of the GPUs that hold replicas, as ingest samples of their deployment's pool.

        Best effort: telemetry is advisory (decode pools look busy at light load, HeteroScale), so a
        missing ingest never disturbs the placement stream; the failure is logged once per minute.
        """
        from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc

        by_index = {t.index: t for t in telemetry}
        samples = []
        for managed in self.supervisor.replicas.values():
            st = managed.state
            pool = pool_to_pb(PoolKey(st.stage, st.operator))
            for index in st.gpu_indices:
                if index in by_index:
                    samples.append(
                        ingest_pb2.Sample(
                            deployment=st.deployment,
                            pool=pool,
                            instance=st.replica_id,
                            timestamp_ms=by_index[index].timestamp_ms,
                            gpu=by_index[index],
                        )
                    )
        if not samples:
            return
        if self._ingest is None:
            self._ingest = instrumented_channel(
                self.config.ingest_address, None, security=self.config.security
            )
        stub = ingest_pb2_grpc.IngestServiceStub(self._ingest)
        request = ingest_pb2.PushSamplesRequest(batch_id=f"{self.session_id}-{self._seq}", samples=samples)
        try:
            await stub.PushSamples(request, timeout=2)
        except grpc.aio.AioRpcError as exc:
            now = self._clock.monotonic()
            if now - self._ingest_warned_s > 60:
                self._ingest_warned_s = now
                log.warning("GPU telemetry to ingest failed: %s %s", exc.code().name, exc.details())
