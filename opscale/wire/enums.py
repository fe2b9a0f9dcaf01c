"""Enum tables between proto enums and domain enums, derived from names, never written out.

A proto enum's values are ``<PREFIX>_<NAME>`` (``STAGE_DECODE``, ``REPLICA_OBSERVED_STATE_READY``);
the domain enum's value is ``name.lower()``. ``EnumMap`` pairs them once at import and fails loudly if a
domain member has no proto value (the tests also walk every member both ways).
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

from opscale.actuation import Outcome
from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.db.status import NodeStatus, ReplicaDesired, ReplicaObserved
from opscale.errors import InvalidArgument
from opscale.pools import OperatorKind, ServingMode, Stage

E = TypeVar("E", bound=enum.Enum)


class EnumMap(Generic[E]):
    """``domain`` <-> proto numbers of ``pb_enum`` (an ``EnumTypeWrapper``) whose names start ``prefix``."""

    def __init__(self, domain: type[E], pb_enum: Any, prefix: str) -> None:
        self.domain, self.pb_enum, self.prefix = domain, pb_enum, prefix
        self._to: dict[E, int] = {}
        for member in domain:
            name = f"{prefix}{str(member.value).upper()}"
            if name not in pb_enum.DESCRIPTOR.values_by_name:
                raise RuntimeError(f"{pb_enum.DESCRIPTOR.name} has no {name} for {member!r}")
            self._to[member] = pb_enum.Value(name)
        self._from = {v: k for k, v in self._to.items()}

    def to_pb(self, member: E) -> int:
        return self._to[member]

    def from_pb(self, value: int, field: str) -> E:
        """The member for ``value``; an unknown or unspecified number is the caller's mistake."""
        found = self._from.get(value)
        if found is None:
            allowed = ", ".join(self.pb_enum.Name(v) for v in self._from)
            raise InvalidArgument(f"{field}: {value} is not one of {allowed}", field=field)
        return found

    def from_pb_or_none(self, value: int, field: str) -> E | None:
        """Like ``from_pb``, but 0 (unspecified) is ``None``: the default applies."""
        return None if value == 0 else self.from_pb(value, field)

    def label(self, value: int) -> str:
        """For display: the domain name, or the proto's own name for a number this build does not know."""
        found = self._from.get(value)
        return str(found.value) if found is not None else "unspecified" if value == 0 else str(value)


STAGE = EnumMap(Stage, cpb.Stage, "STAGE_")
OPERATOR = EnumMap(OperatorKind, cpb.OperatorKind, "OPERATOR_KIND_")
MODE = EnumMap(ServingMode, dpb.ServingMode, "SERVING_MODE_")
OUTCOME = EnumMap(Outcome, dpb.PlacementOutcome, "PLACEMENT_OUTCOME_")
NODE_STATUS = EnumMap(NodeStatus, ppb.NodeStatus, "NODE_STATUS_")
REPLICA_DESIRED = EnumMap(ReplicaDesired, ppb.ReplicaDesiredState, "REPLICA_DESIRED_STATE_")
REPLICA_OBSERVED = EnumMap(ReplicaObserved, ppb.ReplicaObservedState, "REPLICA_OBSERVED_STATE_")
ALL = (STAGE, OPERATOR, MODE, OUTCOME, NODE_STATUS, REPLICA_DESIRED, REPLICA_OBSERVED)
