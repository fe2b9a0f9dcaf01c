"""The pool vocabulary every layer shares: stages, operator kinds, serving modes and ``PoolKey``.

A *pool* is one operator of one stage (``prefill/attention``), or a whole model replica of a stage
(``decode/model``). ``PoolKey`` is its one domain shape: the spec, the policies, the decision record,
the signals, placement's seams and the wire converters (``opscale.wire``) all use it. Its fields are
plain names, so a pool read back from JSON or a proto compares and hashes like one built from the enums
here (``StrEnum`` members are strings).

Pure and dependency-free (``opscale.errors`` only), so the spec, the policy core and the signals can all
import it without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from opscale.errors import InvalidArgument


class Stage(enum.StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    SERVING = "serving"


class OperatorKind(enum.StrEnum):
    EMBEDDING = "embedding"
    ATTENTION = "attention"
    FFN = "ffn"
    EXPERTS = "experts"
    LM_HEAD = "lm_head"
    MODEL = "model"


class ServingMode(enum.StrEnum):
    DISAGGREGATED = "disaggregated"
    COLOCATED = "colocated"


STAGES_FOR_MODE = {
    ServingMode.DISAGGREGATED: (Stage.PREFILL, Stage.DECODE),
    ServingMode.COLOCATED: (Stage.SERVING,),
}


@dataclass(frozen=True, slots=True, order=True)
class PoolKey:
    """One pool: an operator of a stage (``prefill/attention``), or a whole-replica pool whose operator is
    ``model`` (``decode/model``; ``serving/model`` for a deployment that is not disaggregated)."""

    stage: str
    operator: str

    def __post_init__(self) -> None:
        for name, value in (("stage", self.stage), ("operator", self.operator)):
            if not value or "/" in value:
                raise InvalidArgument(
                    f"pool {name} must be a non-empty name without '/', got {value!r}", field=name
                )

    def __str__(self) -> str:
        return f"{self.stage}/{self.operator}"

    @classmethod
    def parse(cls, text: str) -> PoolKey:
        """Inverse of ``str()``: ``"decode/model"`` -> ``PoolKey("decode", "model")``."""
        stage, sep, operator = text.partition("/")
        if not sep:
            raise InvalidArgument(f"a pool is written 'stage/operator', got {text!r}", field="pool")
        return cls(stage, operator)


def known_pool(pool: PoolKey, field: str = "pool") -> PoolKey:
    """``pool`` if its stage and operator are ones opscale knows (policies may name others internally;
    what users and the wire name must be these), as plain names."""
    if pool.stage not in Stage.__members__.values():
        allowed = ", ".join(Stage)
        raise InvalidArgument(f"{field}: stage {pool.stage!r} is not one of {allowed}", field=field)
    if pool.operator not in OperatorKind.__members__.values():
        allowed = ", ".join(OperatorKind)
        raise InvalidArgument(f"{field}: operator {pool.operator!r} is not one of {allowed}", field=field)
    return PoolKey(str(pool.stage), str(pool.operator))
