"""Value types of the pure placement core: what ``place`` reads and what it answers.

All values are frozen slotted dataclasses (CONVENTIONS habit 13). Construction checks only what would
make the algorithm's arithmetic meaningless (negative memory, compute share outside (0, 1], …) and raises
``InvalidArgument`` naming the field: those are caller bugs. Demands that do not fit the cluster are not
errors: ``place`` reports them as ``Infeasible`` data (the Ray autoscaler v2 habit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from opscale.errors import InvalidArgument

#: Topology levels from the widest to the narrowest; ``PlacementInput.domain_level`` names one of them.
LEVELS: tuple[str, ...] = ("zone", "s2", "s1", "s0", "nvlink_domain")

_EMPTY: Mapping[tuple[str, str], float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Topology:
    """Where a node sits: availability zone ⊃ S2 switch tier ⊃ S1 ⊃ S0 (rack / ToR) ⊃ NVLink domain.

    Labels are compared within their parent only through the full path (``path``), so two racks that are
    both called ``r1`` under different S1 switches are different racks. An empty label means "unknown":
    it matches nothing except another node with the same full path.
    """

    zone: str = ""
    s2: str = ""
    s1: str = ""
    s0: str = ""
    nvlink_domain: str = ""

    def path(self, level: str) -> tuple[str, ...]:
        """The labels from the zone down to ``level`` inclusive: the identity of the domain at that level."""
        if level not in LEVELS:
            raise InvalidArgument(f"topology level must be one of {LEVELS}, got {level!r}", field="level")
        return (self.zone, self.s2, self.s1, self.s0, self.nvlink_domain)[: LEVELS.index(level) + 1]


@dataclass(frozen=True, slots=True)
class GpuSlot:
    """One GPU of a node: its index on the node (as in ``CUDA_VISIBLE_DEVICES``), type and memory."""

    index: int
    gpu_type: str
    memory_bytes: int

    def __post_init__(self) -> None:
        if self.index < 0:
            raise InvalidArgument(f"GPU index must be >= 0, got {self.index}", field="index")
        if self.memory_bytes <= 0:
            raise InvalidArgument(
                f"GPU memory_bytes must be > 0, got {self.memory_bytes}", field="memory_bytes"
            )


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A GPU host. ``schedulable=False`` (cordoned, draining, lost-but-not-yet-removed): no NEW replicas
    go there; replicas already there stay unless their pool shrinks, and then they are stopped first."""

    name: str
    gpus: tuple[GpuSlot, ...]
    topology: Topology = field(default_factory=Topology)
    schedulable: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("node name must be non-empty", field="name")
        indices = [g.index for g in self.gpus]
        if len(set(indices)) != len(indices):
            raise InvalidArgument(
                f"node {self.name}: GPU indices must be unique, got {indices}", field="gpus"
            )


@dataclass(frozen=True, slots=True)
class PoolDemand:
    """The FULL desired replica count of one operator pool (level-triggered, not a delta).

    ``gpu_types``: preferred type first, then the compatible types to spill over to, in that order;
    empty means any type. ``group``: pools sharing a non-empty group (a P/D deployment group) are kept
    inside one network domain at ``PlacementInput.domain_level``. ``exchange_bytes_per_token`` maps the
    (stage, operator) of a peer pool in the same deployment to the bytes per token the two exchange; it
    weights locality (same GPU > same NVLink domain / node > same S1 > same S2 > anywhere).
    """

    deployment: str
    stage: str
    operator: str
    replicas: int
    gpus_per_replica: int
    memory_bytes_per_gpu: int
    compute_fraction: float = 1.0
    gpu_types: tuple[str, ...] = ()
    group: str = ""
    exchange_bytes_per_token: Mapping[tuple[str, str], float] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        for name in ("deployment", "stage", "operator"):
            if not getattr(self, name):
                raise InvalidArgument(f"pool {name} must be non-empty", field=name)
        if self.replicas < 0:
            raise InvalidArgument(f"replicas must be >= 0, got {self.replicas}", field="replicas")
        if self.gpus_per_replica < 1:
            raise InvalidArgument(
                f"gpus_per_replica must be >= 1, got {self.gpus_per_replica}", field="gpus_per_replica"
            )
        if self.memory_bytes_per_gpu < 0:
            raise InvalidArgument(
                f"memory_bytes_per_gpu must be >= 0, got {self.memory_bytes_per_gpu}",
                field="memory_bytes_per_gpu",
            )
        if not 0.0 < self.compute_fraction <= 1.0:
            raise InvalidArgument(
                f"compute_fraction must be in (0, 1], got {self.compute_fraction}", field="compute_fraction"
            )

    @property
    def pool(self) -> tuple[str, str, str]:
        return (self.deployment, self.stage, self.operator)


@dataclass(frozen=True, slots=True)
class PlacedReplica:
    """A replica bound to GPUs of one node. Several replicas may share a GPU while the sums of their
    memory and of their compute fractions stay within the GPU's memory and 1.0."""

    id: str
    deployment: str
    stage: str
    operator: str
    node: str
    gpu_indices: tuple[int, ...]
    memory_bytes_per_gpu: int
    compute_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidArgument("replica id must be non-empty", field="id")
        if not self.gpu_indices or len(set(self.gpu_indices)) != len(self.gpu_indices):
            raise InvalidArgument(
                f"replica {self.id}: gpu_indices must be non-empty and unique, got {self.gpu_indices}",
                field="gpu_indices",
            )

    @property
    def pool(self) -> tuple[str, str, str]:
        return (self.deployment, self.stage, self.operator)


@dataclass(frozen=True, slots=True)
class PlacementInput:
    """Inventory, what runs now, and the desired counts. Only deployments named in ``demands`` are
    reconciled; replicas of other deployments are kept as they are (and occupy their GPUs).
    ``leaving``: replicas on their way out (draining, or on a draining node): they hold their GPUs until
    they stop but count towards no pool, so their pools are given replacements; they are never in
    ``keep`` and are reported in ``stop`` only when their node or GPUs vanished.
    ``domain_level``: the topology level ("zone", "s2", "s1", "s0") a deployment group must stay within."""

    nodes: tuple[NodeInfo, ...]
    current: tuple[PlacedReplica, ...] = ()
    demands: tuple[PoolDemand, ...] = ()
    domain_level: str = "s1"
    leaving: tuple[PlacedReplica, ...] = ()

    def __post_init__(self) -> None:
        if self.domain_level not in LEVELS:
            raise InvalidArgument(
                f"domain_level must be one of {LEVELS}, got {self.domain_level!r}", field="domain_level"
            )
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise InvalidArgument("node names must be unique", field="nodes")
        ids = [r.id for r in (*self.current, *self.leaving)]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("current and leaving replica ids must be unique", field="current")
        pools = [d.pool for d in self.demands]
        if len(set(pools)) != len(pools):
            raise InvalidArgument(
                "each (deployment, stage, operator) may appear once in demands", field="demands"
            )


@dataclass(frozen=True, slots=True)
class Infeasible:
    """A pool that could not reach its desired count: ``placed`` of ``requested`` run after this plan;
    ``reason`` names what was short (GPUs of a type, memory, compute, domain capacity, …)."""

    deployment: str
    stage: str
    operator: str
    requested: int
    placed: int
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementOutput:
    """The plan. ``start``: new replicas to launch. ``stop``: replicas to drain and stop (including those
    on nodes that vanished from the inventory — the caller marks those lost). ``keep``: replicas that stay,
    of every deployment (reconciled or not). ``reasons``: one human-readable line per decision worth
    explaining (moves, lost nodes, domain choices)."""

    start: tuple[PlacedReplica, ...] = ()
    stop: tuple[PlacedReplica, ...] = ()
    keep: tuple[PlacedReplica, ...] = ()
    infeasible: tuple[Infeasible, ...] = ()
    reasons: tuple[str, ...] = ()
