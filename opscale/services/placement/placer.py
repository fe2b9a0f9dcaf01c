"""Turn pool targets into replicas on GPUs: read the inventory, call the pure ``place``, persist the plan.

Runs inside the caller's transaction (ApplyDesired, the reconciler, DrainNode), so a plan is written
whole or not at all: the new replicas, their start commands, and the drain commands of the replicas
that leave, together.

Replicas that are already leaving (desired DRAINING) and replicas on a draining node still hold their
GPUs: they go to ``place`` as ``leaving``, which keeps their GPUs occupied without counting them towards
their pool — exactly "place replacements first". Commands are the typed ``opscale.actuation`` ones,
stored as their payload documents.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from opscale.actuation import DrainReplica, StartReplica, StopReplica, to_payload
from opscale.clock import Clock
from opscale.db.records import NodeRecord, PoolTargetRecord, ReplicaRecord
from opscale.db.repo import CommandRepo, NodeRepo, PoolTargetRepo, ReplicaRepo
from opscale.db.status import CommandKind, NodeStatus, ReplicaDesired, ReplicaObserved
from opscale.placement import (
    GpuSlot,
    Infeasible,
    NodeInfo,
    PlacedReplica,
    PlacementInput,
    PlacementOutput,
    Topology,
)
from opscale.pools import PoolKey
from opscale.services.placement.demand import pool_demand
from opscale.telemetry import current_trace_context

#: Nodes whose GPUs hold replicas but take no new ones.
_OCCUPIED_ONLY = frozenset({NodeStatus.REGISTERING, NodeStatus.CORDONED, NodeStatus.DRAINING})

PlaceFn = Callable[[PlacementInput], PlacementOutput]


def _default_place(placement_input: PlacementInput) -> PlacementOutput:
    from opscale.placement.algorithm import place

    def new_id(deployment: str, stage: str, operator: str, n: int) -> str:
        return new_replica_id(deployment, stage, operator)

    return place(placement_input, new_id=new_id)


@dataclass
class PlanResult:
    started: list[ReplicaRecord] = field(default_factory=list)
    draining: list[ReplicaRecord] = field(default_factory=list)
    unchanged: int = 0
    infeasible: list[Infeasible] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    nodes_to_wake: set[str] = field(default_factory=set)


def topology_of(node: NodeRecord) -> Topology:
    labels = {str(k): str(v) for k, v in dict(node.labels).items()}
    return Topology(
        zone=labels.get("zone", ""),
        s2=labels.get("s2", ""),
        s1=labels.get("s1", ""),
        s0=labels.get("s0", labels.get("rack", "")),
        nvlink_domain=labels.get("nvlink_domain", ""),
    )


def node_info(node: NodeRecord, schedulable: bool) -> NodeInfo:
    return NodeInfo(
        name=node.name,
        gpus=tuple(GpuSlot(g.index, g.gpu_type, max(1, g.memory_bytes)) for g in node.gpus),
        topology=topology_of(node),
        schedulable=schedulable,
    )


def new_replica_id(deployment: str, stage: str, operator: str) -> str:
    return f"{deployment[:36]}-{stage[:1]}-{operator[:10]}-{uuid.uuid4().hex[:10]}"


def command_key(replica_id: str, generation: int, kind: CommandKind) -> str:
    return f"{replica_id}/{generation}/{kind.value}"


class Placer:
    def __init__(
        self,
        clock: Clock,
        *,
        templates_of: Callable[[str], frozenset[str] | None],
        drain_grace_s: float,
        place_fn: PlaceFn | None = None,
    ) -> None:
        self._clock = clock
        self._templates_of = templates_of  # live agent's allowed templates; None: no live agent known
        self._drain_grace_s = drain_grace_s
        self._place = place_fn or _default_place

    async def reconcile(self, session: AsyncSession, deployments: Collection[str]) -> PlanResult:
        """Place every pool target of ``deployments`` against the current inventory and persist the plan."""
        targets = [
            t for t in await PoolTargetRepo(session, clock=self._clock).list() if t.deployment in deployments
        ]
        if not targets:
            return PlanResult()
        nodes = await NodeRepo(session, clock=self._clock).list()
        replicas = await ReplicaRepo(session, clock=self._clock).list()
        by_pool = {(t.deployment, t.stage, t.operator): t for t in targets}
        all_targets = {
            (t.deployment, t.stage, t.operator): t
            for t in await PoolTargetRepo(session, clock=self._clock).list()
        }
        templates = {str(t.demand.get("template", "worker")) for t in targets}
        result = PlanResult()
        node_by_name = {n.name: n for n in nodes}
        infos, refused = self._inventory(nodes, templates)
        holding = list(self._current(replicas, node_by_name, all_targets))
        demands = tuple(
            pool_demand(t.deployment, t.stage, t.operator, t.replicas, t.demand) for t in by_pool.values()
        )
        placement_input = PlacementInput(
            nodes=tuple(infos),
            current=tuple(r for r, leaving in holding if not leaving),
            demands=demands,
            leaving=tuple(r for r, leaving in holding if leaving),
        )
        output = await asyncio.to_thread(self._place, placement_input)
        result.reasons.extend(output.reasons)
        result.infeasible.extend(self._explain(output.infeasible, templates, refused, infos))
        commands = CommandRepo(session, clock=self._clock)
        replica_repo = ReplicaRepo(session, clock=self._clock)
        for placed in output.start:
            target = by_pool[placed.pool]
            replica_id = placed.id
            record = await replica_repo.create(
                replica_id,
                deployment=placed.deployment,
                stage=placed.stage,
                operator=placed.operator,
                node=placed.node,
                gpu_indices=placed.gpu_indices,
            )
            node = node_by_name[placed.node]
            gpu_type = next((g.gpu_type for g in node.gpus if g.index == placed.gpu_indices[0]), "")
            await commands.enqueue(
                command_key(replica_id, record.generation, CommandKind.START),
                node=placed.node,
                replica_id=replica_id,
                generation=record.generation,
                kind=CommandKind.START,
                payload=traced(to_payload(start_command(target, placed, record.generation, gpu_type))),
            )
            result.started.append(record)
            result.nodes_to_wake.add(placed.node)
        by_id = {r.id: r for r in replicas}
        for placed in output.stop:
            replica = by_id.get(placed.id)
            if replica is None or replica.deployment not in deployments:
                continue
            result.draining.append(await self.leave(session, replica, reason="scale-in", result=result))
        result.unchanged = sum(1 for r in output.keep if r.deployment in deployments)
        return result

    def _inventory(
        self, nodes: Iterable[NodeRecord], templates: Collection[str]
    ) -> tuple[list[NodeInfo], dict[str, list[str]]]:
        infos: list[NodeInfo] = []
        refused: dict[str, list[str]] = {}  # template -> nodes whose agent does not allow it
        for node in nodes:
            if node.status is NodeStatus.READY:
                allowed = self._templates_of(node.name)
                missing = [t for t in templates if allowed is not None and t not in allowed]
                for template in missing:
                    refused.setdefault(template, []).append(node.name)
                infos.append(node_info(node, schedulable=not missing))
            elif node.status in _OCCUPIED_ONLY:
                infos.append(node_info(node, schedulable=False))
        return infos, refused

    def _current(
        self,
        replicas: Iterable[ReplicaRecord],
        nodes: Mapping[str, NodeRecord],
        targets: Mapping[tuple[str, str, str], PoolTargetRecord],
    ) -> Iterable[tuple[PlacedReplica, bool]]:
        """Every replica holding GPUs, and whether it is leaving."""
        for replica in replicas:
            node = nodes.get(replica.node or "")
            if node is None or replica.desired_state is ReplicaDesired.STOPPED or not replica.gpu_indices:
                continue
            if node.status in (NodeStatus.LOST, NodeStatus.DECOMMISSIONED):
                continue
            target = targets.get((replica.deployment, replica.stage, replica.operator))
            doc: Mapping[str, Any] = target.demand if target else {}
            leaving = replica.desired_state is ReplicaDesired.DRAINING or node.status is NodeStatus.DRAINING
            yield (
                PlacedReplica(
                    id=replica.id,
                    deployment=replica.deployment,
                    stage=replica.stage,
                    operator=replica.operator,
                    node=node.name,
                    gpu_indices=replica.gpu_indices,
                    memory_bytes_per_gpu=int(doc.get("memory_bytes_per_gpu", 0)),
                    compute_fraction=float(doc.get("compute_fraction", 1.0)),
                ),
                leaving,
            )

    def _explain(
        self,
        infeasible: Iterable[Infeasible],
        templates: Collection[str],
        refused: Mapping[str, list[str]],
        infos: list[NodeInfo],
    ) -> list[Infeasible]:
        schedulable = [n.name for n in infos if n.schedulable]
        out = []
        for item in infeasible:
            extra = []
            if not schedulable:
                extra.append("no node is ready and schedulable")
            for template, names in sorted(refused.items()):
                extra.append(
                    f"agents on {', '.join(sorted(names))} do not allow launch template '{template}'"
                )
            reason = item.reason + (f" ({'; '.join(extra)})" if extra else "")
            out.append(
                Infeasible(item.deployment, item.stage, item.operator, item.requested, item.placed, reason)
            )
        return out

    async def leave(
        self, session: AsyncSession, replica: ReplicaRecord, *, reason: str, result: PlanResult
    ) -> ReplicaRecord:
        """Two-phase scale-in, phase one: out of routing and drain. A replica that never started is
        stopped at once (nothing to drain)."""
        repo = ReplicaRepo(session, clock=self._clock)
        if replica.desired_state is not ReplicaDesired.RUNNING:
            return replica
        if replica.observed_state in (ReplicaObserved.PENDING, ReplicaObserved.FAILED, ReplicaObserved.LOST):
            return await self.stop(session, replica, reason=f"{reason}: never served", result=result)
        updated = await repo.set_desired(replica.id, ReplicaDesired.DRAINING, replica.version, reason=reason)
        if replica.node:
            await CommandRepo(session, clock=self._clock).enqueue(
                command_key(updated.id, updated.generation, CommandKind.DRAIN),
                node=replica.node,
                replica_id=updated.id,
                generation=updated.generation,
                kind=CommandKind.DRAIN,
                payload=traced(to_payload(DrainReplica(updated.id, updated.generation, self._drain_grace_s))),
            )
            result.nodes_to_wake.add(replica.node)
        return updated

    async def stop(
        self,
        session: AsyncSession,
        replica: ReplicaRecord,
        *,
        reason: str,
        result: PlanResult,
        grace_s: float = 10.0,
        send: bool = True,
    ) -> ReplicaRecord:
        """Phase two (or a hard stop): desired STOPPED and, while an agent may hold it, a stop command."""
        if replica.desired_state is ReplicaDesired.STOPPED:
            return replica
        updated = await ReplicaRepo(session, clock=self._clock).set_desired(
            replica.id, ReplicaDesired.STOPPED, replica.version, reason=reason
        )
        if send and replica.node:
            await CommandRepo(session, clock=self._clock).enqueue(
                command_key(updated.id, updated.generation, CommandKind.STOP),
                node=replica.node,
                replica_id=updated.id,
                generation=updated.generation,
                kind=CommandKind.STOP,
                payload=traced(to_payload(StopReplica(updated.id, updated.generation, grace_s))),
            )
            result.nodes_to_wake.add(replica.node)
        return updated


def traced(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with the context of the span queuing it (ApplyDesired, a reconcile pass, a drain), so
    the agent's handling joins that trace; the command row is the hop between the two processes."""
    carrier = current_trace_context()
    return payload | {"trace_context": carrier} if carrier else payload


def start_command(
    target: PoolTargetRecord, placed: PlacedReplica, generation: int, gpu_type: str
) -> StartReplica:
    doc = target.demand
    args = {str(k): str(v) for k, v in dict(doc.get("args", {})).items()}
    args |= {
        "model": str(doc.get("model", "")),
        "gpu_type": gpu_type,
        "batch_size": str(doc.get("batch_size", 1)),
        "gpus_per_replica": str(doc.get("gpus_per_replica", len(placed.gpu_indices))),
        "gpu_share": f"{float(doc.get('compute_fraction', 1.0)):g}",
        "micro_batches": str(doc.get("micro_batches", 1)),
    }
    return StartReplica(
        replica_id=placed.id,
        generation=generation,
        deployment=placed.deployment,
        pool=PoolKey(placed.stage, placed.operator),
        template=str(doc.get("template", "worker")),
        gpu_indices=placed.gpu_indices,
        args=args,
    )
