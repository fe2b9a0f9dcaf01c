"""Pure placement: inventory + current replicas + desired counts + topology -> start / stop / infeasible.

See ``opscale.placement.algorithm`` for the rules, their rationale and the complexity.
"""

from opscale.placement.algorithm import place
from opscale.placement.types import (
    LEVELS,
    GpuSlot,
    Infeasible,
    NodeInfo,
    PlacedReplica,
    PlacementInput,
    PlacementOutput,
    PoolDemand,
    Topology,
)

__all__ = [
    "LEVELS",
    "GpuSlot",
    "Infeasible",
    "NodeInfo",
    "PlacedReplica",
    "PlacementInput",
    "PlacementOutput",
    "PoolDemand",
    "Topology",
    "place",
]
