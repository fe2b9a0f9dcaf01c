"""Placement use cases (transport-free): inventory, cordon/drain, desired counts, replicas, agent sessions.

The app owns the transactions. ApplyDesired validates the whole request before it writes anything and
then writes the pool targets, the new replicas and every command in one transaction: an invalid request
changes nothing, and a valid one is applied whole. Pools that do not fit are reported as infeasible data
with reasons, not as errors (what fits is placed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.actuation import ResizePool
from opscale.api.common.v1 import common_pb2
from opscale.clock import Clock
from opscale.db.records import GpuRecord, NodeRecord, ReplicaRecord
from opscale.db.repo import DeploymentRepo, NodeRepo, PoolTargetRepo, ReplicaRepo
from opscale.db.status import NodeStatus, ReplicaDesired
from opscale.errors import FailedPrecondition, InvalidArgument, StaleVersion
from opscale.lease import decision_is_current
from opscale.placement import Infeasible
from opscale.services.placement.agents import AgentChannel, ReplicaRuntime
from opscale.services.placement.demand import build_demand
from opscale.services.placement.leader import Leadership
from opscale.services.placement.metrics import PlacementMetrics
from opscale.services.placement.placer import PlaceFn, Placer, PlanResult
from opscale.services.placement.reconciler import Reconciler
from opscale.services.placement.retry import retry_stale
from opscale.services.placement.sessions import SessionRegistry
from opscale.services.placement.shortfall import Shortfall, Shortfalls
from opscale.spec import DeploymentSpec


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    heartbeat_interval_s: float = 1.0
    lost_timeout_s: float = 10.0
    reconcile_interval_s: float = 1.0
    command_resend_s: float = 5.0
    drain_grace_s: float = 30.0
    stop_grace_s: float = 10.0
    agent_reconnect_max_s: float = 10.0  # the agents' back-off cap (the same setting configures them)

    @property
    def recovery_grace_s(self) -> float:
        """After placement starts or regains its database, how long before any node may be judged lost:
        an agent whose stream broke is back within its back-off cap, and beats within ``lost_timeout_s``
        of registering."""
        return self.agent_reconnect_max_s + self.lost_timeout_s


@dataclass(frozen=True, slots=True)
class ApplyResult:
    started: int
    draining: int
    unchanged: int
    infeasible: tuple[Infeasible, ...]
    reasons: tuple[str, ...] = field(default=())


class PlacementApp:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        config: PlacementConfig | None = None,
        *,
        place_fn: PlaceFn | None = None,
        tracer: trace.Tracer | None = None,
        metrics: PlacementMetrics | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self._sessions = sessions
        self.leadership = leadership  # None: the only placement replica, always leading
        self._clock = clock
        self.config = config or PlacementConfig()
        self.registry = SessionRegistry()
        self.runtime: dict[str, ReplicaRuntime] = {}
        self.shortfalls = Shortfalls()

        def templates_of(node: str) -> frozenset[str] | None:
            live = self.registry.get(node)
            return None if live is None else live.templates

        self.placer = Placer(
            clock, templates_of=templates_of, drain_grace_s=self.config.drain_grace_s, place_fn=place_fn
        )
        self.agents = AgentChannel(
            sessions,
            clock,
            self.registry,
            self.runtime,
            self.placer,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
            lost_timeout_s=self.config.lost_timeout_s,
            stop_grace_s=self.config.stop_grace_s,
            shortfalls=self.shortfalls,
            metrics=metrics,
        )
        self.reconciler = Reconciler(
            sessions,
            clock,
            self.registry,
            self.runtime,
            self.placer,
            lost_timeout_s=self.config.lost_timeout_s,
            command_resend_s=self.config.command_resend_s,
            drain_grace_s=self.config.drain_grace_s,
            stop_grace_s=self.config.stop_grace_s,
            recovery_grace_s=self.config.recovery_grace_s,
            shortfalls=self.shortfalls,
            tracer=tracer,
            metrics=metrics,
        )

    def is_leader(self) -> bool:
        return self.leadership is None or self.leadership.leading

    def gained_leadership(self) -> None:
        self.reconciler.restart_grace("placement leadership taken")
        self.reconciler.kick.set()

    def lost_leadership(self) -> None:
        """Close every agent stream: the agents reconnect and are sent to the new leader."""
        for session in list(self.registry.live().values()):
            self.registry.release(session)

    def _repo(self, session: AsyncSession) -> NodeRepo:
        return NodeRepo(session, clock=self._clock)

    async def list_nodes(self) -> list[NodeRecord]:
        async with self._sessions() as session:
            return await self._repo(session).list()

    async def get_node(self, name: str) -> NodeRecord:
        async with self._sessions() as session:
            return await self._repo(session).get(name)

    async def list_gpus(self, node: str, gpu_type: str) -> list[tuple[str, GpuRecord]]:
        nodes = [await self.get_node(node)] if node else await self.list_nodes()
        wanted = gpu_type.lower()
        return [(n.name, g) for n in nodes for g in n.gpus if not wanted or g.gpu_type.lower() == wanted]

    def gpu_telemetry(self, node: str, index: int) -> common_pb2.GpuTelemetry | None:
        """The latest telemetry the node's live agent sent for this GPU (None without a live agent)."""
        live = self.registry.get(node)
        if live is None:
            return None
        return next((t for t in live.telemetry if t.index == index), None)

    async def set_status(
        self, name: str, status: NodeStatus, expected_version: int | None, actor: str
    ) -> NodeRecord:
        """Cordon/uncordon; without ``expected_version`` the current version is used (no CAS check)."""
        async with self._sessions() as session, session.begin():
            repo = self._repo(session)
            current = await repo.get(name)
            if current.status is status:
                return current
            version = expected_version if expected_version is not None else current.version
            record = await repo.set_status(name, status, version, actor=actor)
        if status is NodeStatus.READY:
            self.reconciler.kick.set()  # capacity came back: infeasible pools may fit now
        return record

    async def drain_node(self, name: str, actor: str) -> tuple[NodeRecord, int]:
        return await retry_stale(lambda: self._drain_node(name, actor))

    async def _drain_node(self, name: str, actor: str) -> tuple[NodeRecord, int]:
        """Cordon the node and move its replicas: replacements are placed elsewhere and the replicas here
        drain (out of routing, in-flight work finishes) and then stop. One transaction."""
        async with self._sessions() as session, session.begin():
            repo = self._repo(session)
            node = await repo.get(name)
            if node.status is not NodeStatus.DRAINING:
                node = await repo.set_status(name, NodeStatus.DRAINING, node.version, actor=actor)
            here = [
                r
                for r in await ReplicaRepo(session, clock=self._clock).list(node=name)
                if r.desired_state is not ReplicaDesired.STOPPED
            ]
            result = await self.placer.reconcile(session, {r.deployment for r in here})
            for replica in here:
                await self.placer.leave(
                    session, replica, reason=f"node {name} drained by {actor}", result=result
                )
        self._wake(result)
        self.reconciler.kick.set()
        return node, len(here)

    async def get_replicas(self, deployment: str) -> list[tuple[ReplicaRecord, ReplicaRuntime]]:
        async with self._sessions() as session:
            replicas = await ReplicaRepo(session, clock=self._clock).list(deployment=deployment or None)
        return [(r, self.runtime.get(r.id, ReplicaRuntime())) for r in replicas]

    def get_shortfalls(self, deployment: str) -> list[Shortfall]:
        """Pools short of their target for a known reason, as of the last reconcile pass."""
        return self.shortfalls.of(deployment)

    async def apply_desired(
        self, deployment: str, spec_version: int, decision_id: str, pools: Sequence[ResizePool]
    ) -> ApplyResult:
        return await retry_stale(lambda: self._apply_desired(deployment, spec_version, decision_id, pools))

    async def _apply_desired(
        self, deployment: str, spec_version: int, decision_id: str, pools: Sequence[ResizePool]
    ) -> ApplyResult:
        if not pools:
            raise InvalidArgument("pools: at least one pool plan is required", field="pools")
        keys = [str(p.pool) for p in pools]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise InvalidArgument(f"pools: pool {duplicates[0]} is given twice", field="pools")
        async with self._sessions() as session, session.begin():
            record = await DeploymentRepo(session, clock=self._clock).get(deployment)
            if spec_version and spec_version != record.version:
                raise StaleVersion(
                    f"spec_version: deployment '{deployment}' is at spec version {record.version}, the plan "
                    f"was made for {spec_version}; decide again on the current spec",
                    expected=spec_version,
                    actual=record.version,
                )
            if record.frozen:
                raise FailedPrecondition(
                    f"deployment '{deployment}' is frozen; unfreeze it before applying new counts",
                    field="deployment",
                )
            if decision_id and not await decision_is_current(session, deployment, decision_id):
                raise FailedPrecondition(
                    f"decision_id: decision {decision_id} of '{deployment}' was made by a decision leader "
                    "that has since lost its lease; the current leader's decisions apply",
                    field="decision_id",
                )
            spec = DeploymentSpec.model_validate(record.spec)
            # Every pool is validated before the first write, so a bad pool leaves nothing half-applied.
            demands = [build_demand(spec, p, f"pools[{i}]") for i, p in enumerate(pools)]
            targets = PoolTargetRepo(session, clock=self._clock)
            for plan, doc in zip(pools, demands, strict=True):
                await targets.put(
                    deployment,
                    plan.pool.stage,
                    plan.pool.operator,
                    replicas=plan.replicas,
                    demand=doc,
                    spec_version=record.version,
                    decision_id=decision_id or None,
                )
            result = await self.placer.reconcile(session, {deployment})
        self.shortfalls.note_infeasible(result.infeasible)
        self._wake(result)
        return ApplyResult(
            started=len(result.started),
            draining=len(result.draining),
            unchanged=result.unchanged,
            infeasible=tuple(result.infeasible),
            reasons=tuple(result.reasons),
        )

    def _wake(self, result: PlanResult) -> None:
        for node in result.nodes_to_wake:
            self.registry.wake(node)
