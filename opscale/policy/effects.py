"""What the stabilizer did to a count, as data: the rule that bound it, from how many to how many, and
why (the decision record stores these and ``opscale explain`` reads them)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from opscale.pools import PoolKey


class Rule(enum.StrEnum):
    """The stabilizer step that changed a count (``StabilizerEffect.rule``)."""

    FROZEN = "frozen"
    FAIL_STATIC = "fail_static"
    MIN = "min"
    MAX = "max"
    SCALE_UP_WINDOW = "scale_up_window"
    SCALE_DOWN_WINDOW = "scale_down_window"
    SCALE_UP_COOLDOWN = "scale_up_cooldown"
    SCALE_DOWN_COOLDOWN = "scale_down_cooldown"
    MAX_STEP = "max_step"
    FOLLOWER_STEP = "follower_step"
    BOUNDS = "bounds"  # current was outside [min, max]: the bounds override steps and cooldowns
    UNSPECIFIED = "unspecified"  # in decisions recorded before the stabilizer named its rules


@dataclass(frozen=True, slots=True)
class StabilizerEffect:
    """One change a stabilizer step made to a pool's count (a coupled group's, through its leader):
    ``before`` → ``after`` by ``rule``, with the sentence that says why."""

    pool: PoolKey
    rule: Rule
    before: int
    after: int
    reason: str
