"""The level-triggered reconciler: compare desired with observed every pass and repair the difference.

Each pass, in order (each step its own transaction, so one failing step does not hold back the others):

1. flush buffered heartbeats to the database;
2. nodes whose heartbeat is older than ``recovery_grace_s`` (``lost_timeout_s`` + the agents' reconnect
   back-off cap) become LOST; their replicas are stopped in the record (observed LOST) and their pools
   re-placed. Never within ``recovery_grace_s`` of this process
   starting or of the database coming back after an outage: the heartbeats in the database are stale
   then through no fault of the nodes, and their agents are still on their way back (each waits up to
   its reconnect back-off cap, then registers and keeps its replicas);
3. replicas that died for good (observed FAILED while desired RUNNING) are retired;
4. draining replicas that are drained, or whose grace ran out, get their stop command (phase two);
5. records whose process is known gone while desired STOPPED are closed (observed STOPPED);
6. every pool whose live replica count differs from its target is re-placed;
7. commands sent but unacknowledged for ``command_resend_s`` go back to PENDING and their node's stream
   is woken (agents treat a repeated ``(replica_id, generation)`` as a no-op), as is the stream of any
   node with PENDING commands (queued by another placement replica);
8. a DRAINING node with no replica left becomes CORDONED (drain finished, like ``kubectl drain``).

Nothing here is edge-triggered: a pass that crashes half-way is repaired by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.records import ReplicaRecord
from opscale.db.repo import AuditRepo, CommandRepo, NodeRepo, PoolTargetRepo, ReplicaRepo
from opscale.db.status import CommandStatus, NodeStatus, ReplicaDesired, ReplicaObserved
from opscale.errors import OpscaleError, Unavailable
from opscale.outage import OUTAGE_ERRORS, Outage
from opscale.services.placement.agents import ReplicaRuntime, observe
from opscale.services.placement.metrics import PlacementMetrics
from opscale.services.placement.placer import Placer, PlanResult
from opscale.services.placement.retry import retry_stale
from opscale.services.placement.sessions import SessionRegistry
from opscale.services.placement.shortfall import Assessment, Shortfalls
from opscale.telemetry import PERIODIC

log = logging.getLogger(__name__)

#: Failed replicas of one deployment replaced at once before re-placement is held back; the hold then
#: doubles per further failure (2 s, 4 s, … up to MAX_HOLD_S) while failures keep coming within
#: FAILURE_MEMORY_S of each other.
FREE_FAILURES = 3
MAX_HOLD_S = 300.0
FAILURE_MEMORY_S = 600.0
_WATCHED = (NodeStatus.REGISTERING, NodeStatus.READY, NodeStatus.CORDONED, NodeStatus.DRAINING)
_GONE = (ReplicaObserved.PENDING, ReplicaObserved.FAILED, ReplicaObserved.LOST)


def drain_started(replica: ReplicaRecord) -> datetime | None:
    for change in reversed(replica.status_history):
        if change.field == "desired" and change.new == ReplicaDesired.DRAINING.value:
            return change.at
    return None


class Reconciler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        registry: SessionRegistry,
        runtime: dict[str, ReplicaRuntime],
        placer: Placer,
        *,
        lost_timeout_s: float,
        command_resend_s: float,
        drain_grace_s: float,
        stop_grace_s: float,
        recovery_grace_s: float = 0.0,
        shortfalls: Shortfalls | None = None,
        on_change: Callable[[], None] | None = None,
        tracer: trace.Tracer | None = None,
        metrics: PlacementMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._last_pass_mono = clock.monotonic()
        if metrics is not None:
            metrics.watch(lambda: len(registry.live()), lambda: clock.monotonic() - self._last_pass_mono)
        self._tracer = tracer or trace.NoOpTracer()
        self._clock = clock
        self._registry = registry
        self._runtime = runtime
        self._placer = placer
        self._lost_timeout_s = lost_timeout_s
        self._recovery_grace_s = recovery_grace_s
        self.shortfalls = shortfalls or Shortfalls()
        # Nodes are judged from this moment (monotonic) on: the process start, then each return of the
        # database. ``_database_down`` is set by any pass or flush that could not reach it.
        self._judge_from = clock.monotonic()
        self._database_down = False
        self._command_resend_s = command_resend_s
        self._drain_grace_s = drain_grace_s
        self._stop_grace_s = stop_grace_s
        self._on_change = on_change
        self._outage = Outage("placement reconcile: the database is unavailable", log)
        self._flush_outage = Outage("placement heartbeat flush: the database is unavailable", log)
        self.kick = asyncio.Event()
        self.passes = 0
        self._failures: dict[str, tuple[int, float, float]] = {}  # deployment -> (count, hold until, last)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def restart_grace(self, why: str) -> None:
        """Judge nodes only after a fresh grace (this replica just took over, so no agent is here yet)."""
        self._judge_from = self._clock.monotonic()
        log.info("%s: no node is judged lost for the next %.0f s", why, self._recovery_grace_s)

    async def run(
        self, stopping: asyncio.Event, interval_s: float, active: Callable[[], bool] | None = None
    ) -> None:
        """Pass every ``interval_s`` (real time: a stop-Event wait, so shutdown is prompt) or when kicked;
        only while ``active()`` (this placement replica leads)."""
        while not stopping.is_set():
            waiter = asyncio.ensure_future(self.kick.wait())
            stopper = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter, stopper}, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if stopping.is_set():
                return
            self.kick.clear()
            if active is not None and not active():
                continue
            try:
                await self.reconcile_once()
                self._outage.ok()
            except OUTAGE_ERRORS as exc:  # the database is away: said once, the next pass retries
                self._outage.failed(exc)
            except Exception:  # a bug: log it whole
                log.exception("reconcile pass failed; the next pass retries")

    async def flush_heartbeats(self) -> None:
        dirty = self._registry.take_dirty()
        if not dirty:
            return
        beats = {node: (session, datetime.fromtimestamp(at, UTC)) for node, (session, at) in dirty.items()}
        async with self._sessions() as session, session.begin():
            await NodeRepo(session, clock=self._clock).heartbeat_many(beats)

    async def run_heartbeat_flush(
        self, stopping: asyncio.Event, interval_s: float, active: Callable[[], bool] | None = None
    ) -> None:
        """Write buffered heartbeats every ``interval_s``, apart from the reconcile pass: a slow pass (a
        big re-placement) must not let the database's heartbeats go stale and nodes look lost."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)
            if active is not None and not active():
                continue
            try:
                await self.flush_heartbeats()
                self._flush_outage.ok()
            except OUTAGE_ERRORS as exc:
                self._database_down = True
                self._flush_outage.failed(exc)
            except Exception:
                log.exception("heartbeat flush failed; the next one writes the latest beats")

    async def reconcile_once(self) -> None:
        # One span per pass: the commands it queues carry its context, so an agent's handling of a
        # re-placement or a drain shows up under the pass that caused it. A pass that queued nothing
        # is not exported (opscale.telemetry.PERIODIC).
        start = self._clock.monotonic()
        with self._tracer.start_as_current_span("placement.reconcile", attributes={PERIODIC: True}):
            try:
                await self._reconcile_once()
                await self._observe()
            except Unavailable:
                self._database_down = True
                raise
        if self._metrics is not None:
            self._metrics.reconcile_duration.observe(self._clock.monotonic() - start)
        self._last_pass_mono = self._clock.monotonic()

    async def _observe(self) -> None:
        """One read of the inventory for the gauges and the pools' shortfalls; an event per change."""
        async with self._sessions() as session:
            nodes = await NodeRepo(session, clock=self._clock).list()
            replicas = await ReplicaRepo(session, clock=self._clock).list()
            targets = await PoolTargetRepo(session, clock=self._clock).list()
        found = self.shortfalls.assess(targets, replicas, self._now())
        if self._metrics is not None:
            self._metrics.observe(nodes, replicas)
            self._metrics.observe_shortfalls(found.short)
        if found.opened or found.closed:
            await self._report(found)

    async def _report(self, found: Assessment) -> None:
        for item in found.opened:
            log.warning("%s", item.describe(), extra={"deployment": item.deployment})
        for item in found.closed:
            log.info(
                "pool %s %s/%s is no longer short (was: %s)",
                item.deployment, item.stage, item.operator, item.reason,
                extra={"deployment": item.deployment},
            )  # fmt: skip
        async with self._sessions() as session, session.begin():
            audit = AuditRepo(session, clock=self._clock)
            for action, items in (("shortfall", found.opened), ("shortfall_resolved", found.closed)):
                for item in items:
                    name = f"{item.deployment}/{item.stage}/{item.operator}"
                    after = {"target": item.target, "ready": item.ready, "reason": item.reason[:1000]}
                    await audit.append("placement", action, "pool", name[:255], None, after)

    async def _reconcile_once(self) -> None:
        self.passes += 1
        await self.flush_heartbeats()
        touched: set[str] = set()
        for step in (self._lost_nodes, self._failed_replicas, self._drains, self._close_stopped):
            try:
                touched |= await retry_stale(step)
            except Unavailable:  # the database is away: the pass ends, its loop reports the outage once
                raise
            except OpscaleError as exc:  # a CAS race with an RPC: the next pass sees the new state
                log.info("reconcile step %s deferred: %s", step.__name__, exc)
        try:
            touched |= await self._deficits()
            await self._replace(touched)
            await retry_stale(self._resend)
            await retry_stale(self._finish_node_drains)
        except Unavailable:
            raise
        except OpscaleError as exc:
            log.info("reconcile deferred: %s", exc)

    def grace_left_s(self) -> float:
        """Seconds until nodes may be judged lost again (0: now)."""
        return max(0.0, self._judge_from + self._recovery_grace_s - self._clock.monotonic())

    async def _lost_nodes(self) -> set[str]:
        now_s = self._clock.now()
        # A silent node is given the grace too, not just the heartbeat timeout: its agent may be on its
        # way back after a broken stream, waiting out a back-off that can reach the cap. Replacing its
        # replicas sooner would only start twins.
        cutoff = self._now() - timedelta(seconds=max(self._lost_timeout_s, self._recovery_grace_s))
        affected: set[str] = set()
        async with self._sessions() as session, session.begin():
            nodes = NodeRepo(session, clock=self._clock)
            replicas = ReplicaRepo(session, clock=self._clock)
            stale = await nodes.list(heartbeat_before=cutoff)
            if self._database_down:  # this read is the first to succeed since the outage
                self._database_down = False
                self._judge_from = self._clock.monotonic()
                log.info(
                    "database reachable again: no node is judged lost for the next %.0f s while agents "
                    "reconnect",
                    self._recovery_grace_s,
                )
            if stale and self.grace_left_s() > 0:
                return affected
            for node in stale:
                if node.status not in _WATCHED or self._registry.fresh(
                    node.name, now_s, self._lost_timeout_s
                ):
                    continue
                await nodes.set_status(node.name, NodeStatus.LOST, node.version, actor="placement")
                log.warning("node %s lost: no heartbeat since %s", node.name, node.last_heartbeat_at)
                live = self._registry.get(node.name)
                if live is not None:
                    self._registry.release(live)
                for replica in await replicas.list(node=node.name):
                    if replica.desired_state is ReplicaDesired.STOPPED:
                        continue
                    reason = f"node {node.name} lost"
                    replica = await observe(replicas, replica, ReplicaObserved.LOST, reason)
                    await self._placer.stop(session, replica, reason=reason, result=PlanResult(), send=False)
                    affected.add(replica.deployment)
        return affected

    async def _failed_replicas(self) -> set[str]:
        affected: set[str] = set()
        async with self._sessions() as session, session.begin():
            for replica in await ReplicaRepo(session, clock=self._clock).list():
                if (
                    replica.desired_state is ReplicaDesired.RUNNING
                    and replica.observed_state is ReplicaObserved.FAILED
                ):
                    info = self._runtime.get(replica.id)
                    reason = f"replica failed ({info.message if info and info.message else 'process gone'})"
                    self.shortfalls.note((replica.deployment, replica.stage, replica.operator), reason)
                    await self._placer.stop(
                        session, replica, reason=reason, result=PlanResult(), send=True, grace_s=0.0
                    )
                    affected.add(replica.deployment)
                    self._note_failure(replica.deployment)
        return affected

    def _note_failure(self, deployment: str) -> None:
        """Replacing a replica that failed for good is held back exponentially per deployment: a launch
        template that always crashes must not mint a new replica every few seconds forever."""
        now = self._clock.monotonic()
        count, _hold_until, last = self._failures.get(deployment, (0, 0.0, now))
        if now - last > FAILURE_MEMORY_S:
            count = 0
        count += 1
        hold = 0.0 if count <= FREE_FAILURES else min(MAX_HOLD_S, 2.0 ** (count - FREE_FAILURES))
        self._failures[deployment] = (count, now + hold, now)
        if hold:
            log.warning(
                "deployment %s: %d replicas failed within %.0f s; holding re-placement for %.0f s",
                deployment, count, FAILURE_MEMORY_S, hold,
            )  # fmt: skip

    def held(self, deployment: str) -> bool:
        entry = self._failures.get(deployment)
        return entry is not None and self._clock.monotonic() < entry[1]

    async def _drains(self) -> set[str]:
        now = self._now()
        result = PlanResult()
        async with self._sessions() as session, session.begin():
            for replica in await ReplicaRepo(session, clock=self._clock).list():
                if replica.desired_state is not ReplicaDesired.DRAINING:
                    continue
                info = self._runtime.get(replica.id)
                started = drain_started(replica) or replica.updated_at
                expired = (now - started).total_seconds() >= self._drain_grace_s
                drained = info is not None and info.drained
                if drained or expired or replica.observed_state in _GONE:
                    why = "drained" if drained else "drain grace over" if expired else "not running"
                    await self._placer.stop(
                        session,
                        replica,
                        reason=f"scale-in phase two: {why}",
                        result=result,
                        grace_s=self._stop_grace_s,
                    )
        self._wake(result)
        return set()

    async def _close_stopped(self) -> set[str]:
        async with self._sessions() as session, session.begin():
            replicas = ReplicaRepo(session, clock=self._clock)
            closing = [
                r
                for r in await replicas.list()
                if r.desired_state is ReplicaDesired.STOPPED
                and r.observed_state is not ReplicaObserved.STOPPED
            ]
            if not closing:
                return set()
            nodes = {n.name: n for n in await NodeRepo(session, clock=self._clock).list()}
            for replica in closing:
                node = nodes.get(replica.node or "")
                gone = replica.observed_state in (ReplicaObserved.FAILED, ReplicaObserved.PENDING)
                # A LOST replica on a node that came back and did not report it is gone too.
                if replica.observed_state is ReplicaObserved.LOST and node is not None:
                    gone = node.status is NodeStatus.READY and self._registry.get(node.name) is not None
                if gone:
                    await observe(replicas, replica, ReplicaObserved.STOPPED, "process known gone")
        return set()

    async def _deficits(self) -> set[str]:
        """Deployments with a pool whose live replicas (desired RUNNING) differ from the target."""
        async with self._sessions() as session:
            targets = await PoolTargetRepo(session, clock=self._clock).list()
            live = Counter(
                (r.deployment, r.stage, r.operator)
                for r in await ReplicaRepo(session, clock=self._clock).list()
                if r.desired_state is ReplicaDesired.RUNNING
            )
        return {t.deployment for t in targets if live[(t.deployment, t.stage, t.operator)] != t.replicas}

    async def _replace(self, deployments: set[str]) -> None:
        # One deployment per plan: a deployment whose pools cannot be placed (say, a launch template no
        # agent allows) must not hold back the others.
        for deployment in sorted(deployments):
            if self.held(deployment):
                left = self._failures[deployment][1] - self._clock.monotonic()
                for pool in self.shortfalls.short_pools(deployment):
                    self.shortfalls.note(
                        pool, f"re-placement held back {left:.0f} s more after repeated replica failures"
                    )
                continue
            await retry_stale(lambda d=deployment: self._replace_one(d))  # type: ignore[misc]

    async def _replace_one(self, deployment: str) -> None:
        async with self._sessions() as session, session.begin():
            result = await self._placer.reconcile(session, {deployment})
        self.shortfalls.note_infeasible(result.infeasible)
        if result.started or result.draining:
            log.info(
                "re-placed %s: %d started, %d draining", deployment, len(result.started), len(result.draining)
            )
        self._wake(result)

    async def _resend(self) -> None:
        cutoff = self._now() - timedelta(seconds=self._command_resend_s)
        nodes: set[str] = set()
        async with self._sessions() as session, session.begin():
            commands = CommandRepo(session, clock=self._clock)
            for command in await commands.unacked(sent_before=cutoff):
                await commands.set_status(command.id, CommandStatus.PENDING)
                nodes.add(command.node)
            # Commands another placement replica queued (it served an ApplyDesired or a drain) ring no
            # doorbell here: deliver them within one pass.
            nodes |= {n for n in await commands.pending_nodes() if n in self._registry.live()}
        for node in nodes:
            self._registry.wake(node)

    async def _finish_node_drains(self) -> None:
        async with self._sessions() as session, session.begin():
            nodes = NodeRepo(session, clock=self._clock)
            for node in await nodes.list(status=NodeStatus.DRAINING):
                left = await ReplicaRepo(session, clock=self._clock).list(node=node.name)
                if all(r.desired_state is ReplicaDesired.STOPPED for r in left) and all(
                    r.observed_state in (ReplicaObserved.STOPPED, ReplicaObserved.LOST) for r in left
                ):
                    await nodes.set_status(node.name, NodeStatus.CORDONED, node.version, actor="placement")

    def _wake(self, result: PlanResult) -> None:
        for node in result.nodes_to_wake:
            self._registry.wake(node)
        if result.nodes_to_wake and self._on_change is not None:
            self._on_change()
