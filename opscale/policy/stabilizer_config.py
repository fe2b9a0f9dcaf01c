"""The stabilizer's inputs, settings and result, and the rules coupled pools follow (pure value types;
``opscale.policy.stabilizer`` has the steps and ``stabilize``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opscale.errors import InvalidArgument
from opscale.policy.types import (
    Infeasibility,
    Limits,
    LoadWindow,
    PoolKey,
    Signal,
    StabilizerEffect,
    StabilizerState,
)

History = tuple[tuple[float, int], ...]
_T = TypeVar("_T")


def _pick(override: _T | None, default: _T) -> _T:
    return default if override is None else override


@dataclass(frozen=True, slots=True)
class StabilizerConfig:
    """Resolved stabilizer settings. Policies publish their defaults as one of these; ``resolve`` lays
    a deployment's ``Limits`` over them (a non-``None`` limit wins)."""

    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 0.0
    scale_up_cooldown_s: float = 0.0
    scale_down_cooldown_s: float = 0.0
    max_step_abs: int | None = None
    max_step_frac: float | None = None
    max_staleness_s: float = 30.0
    scale_out_when_stale: bool = False

    def resolve(self, limits: Limits) -> StabilizerConfig:
        return StabilizerConfig(
            scale_up_window_s=_pick(limits.scale_up_window_s, self.scale_up_window_s),
            scale_down_window_s=_pick(limits.scale_down_window_s, self.scale_down_window_s),
            scale_up_cooldown_s=_pick(limits.scale_up_cooldown_s, self.scale_up_cooldown_s),
            scale_down_cooldown_s=_pick(limits.scale_down_cooldown_s, self.scale_down_cooldown_s),
            max_step_abs=_pick(limits.max_step_abs, self.max_step_abs),
            max_step_frac=_pick(limits.max_step_frac, self.max_step_frac),
            max_staleness_s=_pick(limits.max_staleness_s, self.max_staleness_s),
            scale_out_when_stale=_pick(limits.scale_out_when_stale, self.scale_out_when_stale),
        )

    def max_step(self, current: int) -> int | None:
        """Largest allowed move from ``current`` in one tick; ``None`` if unlimited."""
        steps = []
        if self.max_step_abs is not None:
            steps.append(self.max_step_abs)
        if self.max_step_frac is not None:
            steps.append(max(1, math.ceil(self.max_step_frac * current)))
        return max(steps) if steps else None


def follower_count(leader: int, ratio: float) -> int:
    """``ceil(leader × ratio)``, immune to float noise: 10 × 0.3 = 3.0000000000000004 gives 3, not 4."""
    x = leader * ratio
    nearest = round(x)
    return int(nearest) if abs(x - nearest) < 1e-9 else math.ceil(x)


@dataclass(frozen=True, slots=True)
class CoupledGroup:
    """Pools that move together: each follower has ``follower_count(leader, ratio)`` replicas."""

    leader: PoolKey
    ratios: Mapping[PoolKey, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for pool, r in self.ratios.items():
            if not (r > 0 and math.isfinite(r)) or pool == self.leader:
                raise InvalidArgument(
                    f"coupled pool {pool} needs a ratio > 0 to leader {self.leader}, got {r}", field="ratios"
                )

    @property
    def members(self) -> tuple[PoolKey, ...]:
        return (self.leader, *self.ratios)

    def derive(self, leader_count: int) -> dict[PoolKey, int]:
        out = {self.leader: leader_count}
        out.update({p: follower_count(leader_count, r) for p, r in self.ratios.items()})
        return out


@dataclass(frozen=True, slots=True)
class StabilizerInput:
    """One tick. ``stale`` lists the required signals that are missing or too old, as sentences' parts
    (see ``stale_signals``); non-empty means fail-static."""

    now_s: float
    raw: Mapping[PoolKey, int]
    current: Mapping[PoolKey, int]
    limits: Limits
    config: StabilizerConfig
    state: StabilizerState
    stale: Sequence[str] = ()
    frozen: bool = False
    groups: Sequence[CoupledGroup] = ()
    # Pools of a form the policy no longer runs (opscale.policy.hybrid): they go to their (bounded)
    # recommendation at once — no window, cooldown or step limit; frozen and fail-static still hold.
    retired: frozenset[PoolKey] = frozenset()


@dataclass(frozen=True, slots=True)
class StabilizerResult:
    replicas: dict[PoolKey, int]
    reasons: list[str]
    state: StabilizerState
    infeasible: list[Infeasibility]
    held: frozenset[PoolKey]  # pools kept at current by freeze, fail-static, a window or a cooldown
    effects: list[StabilizerEffect] = field(default_factory=list)  # each change a step made, in order


def stale_signals(load: LoadWindow, required: Iterable[Signal], max_staleness_s: float) -> list[str]:
    """Which required signals are missing or older than ``max_staleness_s``, described for a reason."""
    out = []
    for sig in required:
        age = load.age_s(sig)
        if age is None:
            out.append(f"{sig} was never reported")
        elif age > max_staleness_s:
            out.append(f"{sig} is {age:g} s old (limit {max_staleness_s:g} s)")
    return out


def groups_for(inp: StabilizerInput) -> list[CoupledGroup]:
    seen: set[PoolKey] = set()
    groups: list[CoupledGroup] = []
    for g in inp.groups:
        for m in g.members:
            if m in seen:
                raise InvalidArgument(f"pool {m} is in more than one coupled group", field="groups")
            seen.add(m)
        if g.leader not in inp.raw:
            raise InvalidArgument(f"coupled group leader {g.leader} has no raw recommendation", field="raw")
        groups.append(g)
    groups.extend(CoupledGroup(p) for p in sorted(inp.raw) if p not in seen)
    return groups


def leader_bounds(g: CoupledGroup, limits: Limits) -> tuple[int, int | None, str, str]:
    """[lo, hi] for the leader such that every member stays within its own bounds, and what set each."""
    own = limits.for_pool(g.leader)
    lo, hi = own.min_replicas, own.max_replicas
    lo_why, hi_why = f"min_replicas {lo}", f"max_replicas {hi}"
    for pool, r in g.ratios.items():
        lim = limits.for_pool(pool)
        need = max(0, math.floor((lim.min_replicas - 1) / r))  # smallest L with ceil(L·r) >= min
        while follower_count(need, r) < lim.min_replicas:
            need += 1
        while need > 0 and follower_count(need - 1, r) >= lim.min_replicas:
            need -= 1
        if need > lo:
            lo, lo_why = need, f"{pool} min_replicas {lim.min_replicas} at ratio {r:g}"
        if lim.max_replicas is not None:
            cap = math.floor(lim.max_replicas / r + 1e-9)  # largest L with ceil(L·r) <= max
            while cap > 0 and follower_count(cap, r) > lim.max_replicas:
                cap -= 1
            if hi is None or cap < hi:
                hi, hi_why = cap, f"{pool} max_replicas {lim.max_replicas} at ratio {r:g}"
    return lo, hi, lo_why, hi_why


def push_window(hist: History, now_s: float, value: int, window_s: float, keep_max: bool) -> History:
    """Append ``value`` to a monotonic queue (see ``StabilizerState``), pruned to ``window_s``."""
    kept = [(t, v) for t, v in hist if now_s - window_s < t <= now_s]
    while kept and (kept[-1][1] <= value if keep_max else kept[-1][1] >= value):
        kept.pop()
    kept.append((now_s, value))
    return tuple(kept)
