"""The placement side of the agent stream, transport-free: register, heartbeats, acks, status, delivery.

The servicer reads ``ConnectRequest`` messages and hands each to one method here; what to send back
comes out as ``ConnectResponse`` messages. Every database change runs in its own short transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.clock import Clock
from opscale.db.records import GpuRecord, ReplicaRecord
from opscale.db.repo import AuditRepo, CommandRepo, NodeRepo, ReplicaRepo
from opscale.db.status import (
    CommandKind,
    CommandStatus,
    NodeStatus,
    ReplicaDesired,
    ReplicaObserved,
    allowed,
    transition,
)
from opscale.errors import FailedPrecondition, InvalidArgument, NotFound
from opscale.services.placement.convert import TOPOLOGY_KEYS, command_to_pb
from opscale.services.placement.metrics import PlacementMetrics
from opscale.services.placement.placer import Placer, PlanResult
from opscale.services.placement.retry import retry_stale
from opscale.services.placement.sessions import AgentSession, SessionRegistry
from opscale.services.placement.shortfall import Shortfalls

log = logging.getLogger(__name__)

PROCESS_TO_OBSERVED = {
    apb.REPLICA_PROCESS_STATE_STARTING: ReplicaObserved.STARTING,
    apb.REPLICA_PROCESS_STATE_READY: ReplicaObserved.READY,
    apb.REPLICA_PROCESS_STATE_DRAINING: ReplicaObserved.DRAINING,
    apb.REPLICA_PROCESS_STATE_STOPPED: ReplicaObserved.STOPPED,
    apb.REPLICA_PROCESS_STATE_FAILED: ReplicaObserved.FAILED,
}
MAX_TEXT = 255
#: Concurrent database transactions of agent streams; below the pool's 5 + 10 overflow connections.
STREAM_DB_CONCURRENCY = 8


@dataclass
class ReplicaRuntime:
    """What the agent last said about a replica beyond its state (kept in memory; agents re-report it
    on every reconnect)."""

    restarts: int = 0
    message: str = ""
    endpoint: str = ""
    drained: bool = False
    pid: int = 0
    exit_code: int = 0


def observe_path(current: ReplicaObserved, new: ReplicaObserved) -> list[ReplicaObserved]:
    """The legal steps from ``current`` to ``new``: direct, or through STARTING (an agent that started
    and readied a process between two reports skips a state). Empty when there is no legal path."""
    if current == new:
        return []
    if allowed(current, new):
        return [new]
    via = ReplicaObserved.STARTING
    if allowed(current, via) and allowed(via, new):
        return [via, new]
    return []


async def observe(
    repo: ReplicaRepo, replica: ReplicaRecord, new: ReplicaObserved, reason: str
) -> ReplicaRecord:
    for step in observe_path(replica.observed_state, new):
        replica = await repo.set_observed(replica.id, step, reason=reason)
    return replica


def lost_since(replica: ReplicaRecord) -> datetime | None:
    """When the replica was last observed LOST (its node judged lost), from its status history."""
    for change in reversed(replica.status_history):
        if change.field == "observed" and change.new == ReplicaObserved.LOST.value:
            return change.at
    return None


def _text(value: str, field: str, limit: int = MAX_TEXT) -> str:
    if not value or len(value) > limit:
        raise InvalidArgument(f"{field}: must be 1 to {limit} characters", field=field)
    return value


class AgentChannel:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        registry: SessionRegistry,
        runtime: dict[str, ReplicaRuntime],
        placer: Placer,
        *,
        heartbeat_interval_s: float,
        lost_timeout_s: float,
        stop_grace_s: float,
        shortfalls: Shortfalls | None = None,
        metrics: PlacementMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._shortfalls = shortfalls or Shortfalls()
        self._metrics = metrics
        self._clock = clock
        self._registry = registry
        self._runtime = runtime
        self._placer = placer
        self._heartbeat_interval_s = heartbeat_interval_s
        self._lost_timeout_s = lost_timeout_s
        self._stop_grace_s = stop_grace_s
        # Streams share the database pool with the reconciler and the API. When a whole fleet
        # (re)connects at once — placement restarted — thousands of registrations would otherwise
        # queue inside the pool and time out there; here they queue without a deadline and the pool
        # keeps connections free for the reconciler and ApplyDesired.
        self._db_slots = asyncio.Semaphore(STREAM_DB_CONCURRENCY)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    async def register(self, msg: apb.Register) -> tuple[AgentSession, apb.RegisterAck]:
        node = _text(msg.node_name, "register.node_name")
        session_id = _text(msg.session_id, "register.session_id", 64)
        gpus = [
            GpuRecord(
                index=g.index,
                uuid=g.uuid or f"{node}-gpu{g.index}",
                gpu_type=g.gpu_type or "unknown",
                memory_bytes=g.memory_bytes,
                nvlink_domain=g.nvlink_domain or None,
            )
            for g in msg.gpus
        ]
        labels = {str(k): str(v) for k, v in msg.labels.items()}
        if msg.agent_version:
            labels.setdefault("agent_version", msg.agent_version)
        now_s = self._clock.now()
        agent = AgentSession(
            node=node,
            session_id=session_id,
            templates=frozenset(msg.templates),
            connected_at_s=now_s,
            last_beat_s=now_s,
        )
        self._registry.claim(agent)  # refuses a second live identity before anything is written
        try:
            async with self._db_slots:
                stop_ids = await retry_stale(
                    lambda: self._register_in_db(node, session_id, gpus, labels, msg.running)
                )
        except BaseException:
            self._registry.release(agent)
            raise
        log.info("agent %s registered (session %s, %d GPUs)", node, session_id, len(gpus))
        ack = apb.RegisterAck(
            node_name=node,
            session_id=session_id,
            heartbeat_interval_s=self._heartbeat_interval_s,
            stop_replica_ids=stop_ids,
            lost_timeout_s=self._lost_timeout_s,
        )
        return agent, ack

    async def _register_in_db(
        self,
        node: str,
        session_id: str,
        gpus: list[GpuRecord],
        labels: dict[str, str],
        running: Iterable[apb.RunningReplica],
    ) -> list[str]:
        """Register the node, reconcile what its agent says is running, and make it READY; one transaction."""
        async with self._sessions() as session, session.begin():
            nodes = NodeRepo(session, clock=self._clock)
            record = await nodes.register(node, gpus=gpus, labels=labels, agent_session_id=session_id)
            replicas = ReplicaRepo(session, clock=self._clock)
            reported = {r.replica_id: r for r in running}
            stop_ids: list[str] = []
            superseded: dict[str, datetime] = {}  # replica id -> when its node was judged lost
            for replica_id, running_replica in reported.items():
                try:
                    replica = await replicas.get(replica_id)
                except NotFound:
                    stop_ids.append(replica_id)  # unknown to placement: never ours to keep
                    continue
                if replica.node != node or replica.desired_state is ReplicaDesired.STOPPED:
                    stop_ids.append(replica_id)
                    since = lost_since(replica) if replica.node == node else None
                    if since is not None:
                        superseded[replica_id] = since
                    continue
                observed = PROCESS_TO_OBSERVED.get(running_replica.state, ReplicaObserved.STARTING)
                await observe(replicas, replica, observed, "agent re-registered and adopted the process")
            for replica in await replicas.list(node=node):
                if replica.id in reported or replica.desired_state is ReplicaDesired.STOPPED:
                    continue
                if replica.observed_state in (
                    ReplicaObserved.STARTING,
                    ReplicaObserved.READY,
                    ReplicaObserved.DRAINING,
                    ReplicaObserved.LOST,
                ):
                    # It ran here and the agent no longer has it: gone. The reconciler replaces it.
                    await observe(replicas, replica, ReplicaObserved.FAILED, "agent re-registered without it")
            # Whatever was on the old stream unacknowledged goes out again on this one.
            commands = CommandRepo(session, clock=self._clock)
            for command in await commands.unacked(node=node):
                await commands.set_status(command.id, CommandStatus.PENDING)
            if record.status is NodeStatus.REGISTERING:
                transition(record.status, NodeStatus.READY, what=f"node {node}")
                await nodes.set_status(node, NodeStatus.READY, record.version, actor="placement")
            if superseded:
                await self._report_overlap(session, node, superseded)
            return stop_ids

    async def _report_overlap(
        self, session: AsyncSession, node: str, superseded: dict[str, datetime]
    ) -> None:
        """The node came back with replicas placement had replaced when it judged the node lost: the agent
        stops them at once (they are in the ack's ``stop_replica_ids``), and the overlap — originals and
        replacements both running, since the node was judged lost — is reported: log, metric, event."""
        now = self._now()
        overlap_s = max((now - at).total_seconds() for at in superseded.values())
        ids = sorted(superseded)
        log.warning(
            "node %s returned with %d replicas replaced while it was judged lost; stopping them now "
            "(originals and replacements overlapped for up to %.1f s): %s",
            node, len(ids), overlap_s, ", ".join(ids),
        )  # fmt: skip
        await AuditRepo(session, clock=self._clock).append(
            "placement",
            "stop_superseded",
            "node",
            node,
            None,
            {"replicas": ids, "overlap_s": round(overlap_s, 3)},
        )
        if self._metrics is not None:
            self._metrics.superseded_replicas.inc(len(ids))

    async def heartbeat(self, agent: AgentSession, msg: apb.Heartbeat) -> None:
        agent.seq = max(agent.seq, msg.seq)
        self._registry.beat(agent, self._clock.now(), tuple(msg.gpus))

    async def ack(self, agent: AgentSession, msg: apb.CommandAck) -> None:
        async with self._db_slots:
            await retry_stale(lambda: self._ack(agent, msg))

    async def _ack(self, agent: AgentSession, msg: apb.CommandAck) -> None:
        try:
            command_id = int(msg.command_id)
        except ValueError:
            raise InvalidArgument(
                f"ack.command_id: not a command id: {msg.command_id!r}", field="ack"
            ) from None
        async with self._sessions() as session, session.begin():
            commands = CommandRepo(session, clock=self._clock)
            try:
                command = await commands.get(command_id)
            except NotFound:
                log.warning("agent %s acked unknown command %s", agent.node, command_id)
                return
            if command.node != agent.node:
                raise FailedPrecondition(
                    f"ack.command_id: command {command_id} belongs to node '{command.node}', not "
                    f"'{agent.node}'",
                    field="ack.command_id",
                )
            if command.status is not CommandStatus.SENT:
                return  # a late or repeated ack: the command was re-queued, superseded or acked already
            accepted = msg.status == apb.ACK_STATUS_ACCEPTED
            new = CommandStatus.ACKED if accepted else CommandStatus.FAILED
            await commands.set_status(command_id, new, error=None if accepted else (msg.message or "refused"))
            if accepted or command.kind is not CommandKind.START:
                return
            replicas = ReplicaRepo(session, clock=self._clock)
            replica = await replicas.get(command.replica_id)
            reason = f"agent on {agent.node} refused the start: {msg.message or 'no reason given'}"
            self._runtime.setdefault(replica.id, ReplicaRuntime()).message = reason[:MAX_TEXT]
            self._shortfalls.note((replica.deployment, replica.stage, replica.operator), reason)
            replica = await observe(replicas, replica, ReplicaObserved.FAILED, reason)
            await self._placer.stop(session, replica, reason=reason, result=PlanResult(), send=False)

    async def status(self, agent: AgentSession, msg: apb.ReplicaStatus) -> None:
        info = self._runtime.setdefault(msg.replica_id, ReplicaRuntime())
        info.restarts, info.pid, info.exit_code = msg.restarts, msg.pid, msg.exit_code
        info.endpoint = msg.endpoint or info.endpoint
        info.drained = msg.drained
        if msg.message:
            info.message = msg.message[:MAX_TEXT]
        new = PROCESS_TO_OBSERVED.get(msg.state)
        if new is None:  # CRASHED: the agent restarts it; restarts and message say so
            return
        async with self._db_slots:
            await retry_stale(lambda: self._observe(agent, msg, new))

    async def _observe(self, agent: AgentSession, msg: apb.ReplicaStatus, new: ReplicaObserved) -> None:
        async with self._sessions() as session, session.begin():
            replicas = ReplicaRepo(session, clock=self._clock)
            try:
                replica = await replicas.get(msg.replica_id)
            except NotFound:
                return
            if replica.node != agent.node:
                return
            await observe(replicas, replica, new, f"agent on {agent.node}: {msg.message or new.value}")

    async def deliver(self, agent: AgentSession, limit: int = 100) -> list[apb.ConnectResponse]:
        """Take the node's PENDING commands, mark them SENT and return them for the stream."""
        async with self._db_slots, self._sessions() as session, session.begin():
            commands = CommandRepo(session, clock=self._clock)
            out = []
            for command in await commands.pending(agent.node, limit=limit):
                sent = await commands.set_status(command.id, CommandStatus.SENT)
                out.append(apb.ConnectResponse(command=command_to_pb(sent)))
            return out


__all__ = ["TOPOLOGY_KEYS", "AgentChannel", "ReplicaRuntime", "observe", "observe_path"]
