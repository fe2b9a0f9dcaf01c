"""The stabilizer every policy's raw replica counts pass through (pure: tick in, decision out).

Effects, in order, for each pool — or for each coupled group, through its leader:

1. **frozen**: hold current, say so, change nothing else.
2. **fail-static**: a required signal is missing or older than ``max_staleness_s`` → hold the last
   decision made on fresh data (or current, whichever is larger) and never scale in; scale-out only if
   ``scale_out_when_stale`` is set (default: hold).
3. **bounds**: clamp to [min_replicas, max_replicas].
4. **stabilization windows** (Kubernetes HPA semantics): the clamped recommendation joins the history;
   a scale-up goes no higher than the *min* recommendation of the last ``scale_up_window_s``, a
   scale-down no lower than the *max* recommendation of the last ``scale_down_window_s``.
5. **cooldowns**: no scale-up within ``scale_up_cooldown_s`` of the last scale-up; no scale-down within
   ``scale_down_cooldown_s`` of the last scale action of either direction (shrinking right after growing
   is the flap cooldowns exist to stop; growing stays quick).
6. **step limit**: at most ``max(max_step_abs, max(1, ceil(max_step_frac × current)))`` per tick.
7. **bounds again**: if current itself is outside [min, max], the bounds win over steps and cooldowns.

Coupled groups (pd: prefill follows decode at a fixed ratio). The rule that keeps the ratio: the
stabilizer decides the *leader's* count only, and every follower is ``ceil(leader × ratio)`` of that
count. Follower bounds are turned into leader bounds first (prefill ≤ 5 at ratio 0.5 ⇒ decode ≤ 10),
so clamping the leader never breaks a follower's bound. Windows run on the leader's history. A cooldown
on *any* member holds the whole group at its current counts. A follower's step limit bounds only the
move the leader's change causes (``ceil(new × r) − ceil(old × r)``), so a group found off its ratio
(the ratio was reconfigured, someone edited counts) is put back on ratio in one tick — the ratio wins.
When an effect holds the group (frozen, fail-static, cooldown, window), every member keeps its current
count, so a held group is never partially moved.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opscale.errors import InvalidArgument
from opscale.policy.types import (
    Infeasibility,
    InfeasibilityKind,
    Limits,
    LoadWindow,
    PoolKey,
    Signal,
    StabilizerState,
)

_History = tuple[tuple[float, int], ...]
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


@dataclass(frozen=True, slots=True)
class StabilizerResult:
    replicas: dict[PoolKey, int]
    reasons: list[str]
    state: StabilizerState
    infeasible: list[Infeasibility]
    held: frozenset[PoolKey]  # pools kept at current by freeze, fail-static, a window or a cooldown


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


def _groups_for(inp: StabilizerInput) -> list[CoupledGroup]:
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


def _leader_bounds(g: CoupledGroup, limits: Limits) -> tuple[int, int | None, str, str]:
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


def _push(hist: _History, now_s: float, value: int, window_s: float, keep_max: bool) -> _History:
    """Append ``value`` to a monotonic queue (see ``StabilizerState``), pruned to ``window_s``."""
    kept = [(t, v) for t, v in hist if now_s - window_s < t <= now_s]
    while kept and (kept[-1][1] <= value if keep_max else kept[-1][1] >= value):
        kept.pop()
    kept.append((now_s, value))
    return tuple(kept)


def _names(pools: Iterable[PoolKey]) -> str:
    return ", ".join(str(p) for p in pools)


def _counts(counts: Mapping[PoolKey, int]) -> str:
    return ", ".join(f"{p} {n}" for p, n in counts.items())


def stabilize(inp: StabilizerInput) -> StabilizerResult:
    cfg, now = inp.config, inp.now_s
    st = inp.state
    max_w, min_w = dict(st.max_window), dict(st.min_window)
    last_up, last_down, last_good = dict(st.last_up_s), dict(st.last_down_s), dict(st.last_good)
    out: dict[PoolKey, int] = {}
    reasons: list[str] = []
    infeasible: list[Infeasibility] = []
    held: set[PoolKey] = set()
    if inp.stale:
        infeasible.append(
            Infeasibility(InfeasibilityKind.STALE_SIGNALS, "Fail-static: " + "; ".join(inp.stale) + ".")
        )

    for g in _groups_for(inp):
        members = g.members
        cur = {m: inp.current.get(m, 0) for m in members}
        cur_l, raw_l, leader = cur[g.leader], inp.raw[g.leader], g.leader
        label = str(leader) if not g.ratios else f"{leader} (with {_names(g.ratios)})"
        coupled = f"; holding the coupled group {_names(members)}" if g.ratios else ""
        lo, hi, lo_why, hi_why = _leader_bounds(g, inp.limits)
        if hi is not None and lo > hi:
            infeasible.append(
                Infeasibility(
                    InfeasibilityKind.BOUNDS_CONFLICT,
                    f"{label}: the lower bound {lo} ({lo_why}) exceeds the "
                    f"upper bound {hi} ({hi_why}); the upper bound wins.",
                    leader,
                    lo,
                    hi,
                )
            )
            lo = hi

        def clamp(n: int, lo: int = lo, hi: int | None = hi) -> int:
            return max(lo, n if hi is None else min(n, hi))

        if inp.frozen:
            out.update(cur)
            held.update(members)
            reasons.append(
                f"{label}: frozen, holding current {_counts(cur)} (the policy recommended {raw_l})."
            )
            continue

        if inp.stale:
            hold = {m: max(cur[m], last_good.get(m, cur[m])) for m in members}
            if cfg.scale_out_when_stale and raw_l > hold[g.leader]:
                step = cfg.max_step(cur_l)
                grow = clamp(raw_l if step is None else min(raw_l, cur_l + step))
                hold = {m: max(hold[m], n) for m, n in g.derive(grow).items()}
                reasons.append(
                    f"{label}: fail-static because {'; '.join(inp.stale)}, but scale-out is "
                    f"enabled: {raw_l} → {hold[leader]} (never scaling in on stale data)."
                )
                for m in members:
                    if hold[m] > cur[m]:
                        last_up[m] = now
            else:
                held.update(members)
                reasons.append(
                    f"{label}: fail-static because {'; '.join(inp.stale)}: holding the last good "
                    f"decision {_counts(hold)} (the policy recommended {raw_l}; never scaling in "
                    f"on stale data)."
                )
            out.update(hold)
            continue

        # 3. bounds
        rec = clamp(raw_l)
        if rec != raw_l:
            bound = hi_why if hi is not None and raw_l > hi else lo_why
            reasons.append(f"{label}: {raw_l} → {rec}, bounded by {bound}.")
            if hi is not None and raw_l > hi:
                infeasible.append(
                    Infeasibility(
                        InfeasibilityKind.ABOVE_MAX_REPLICAS,
                        f"{leader} needs {raw_l} replicas for the load but {hi_why} allows {hi}.",
                        leader,
                        raw_l,
                        hi,
                    )
                )

        # 4. stabilization windows (record first: the window includes this tick)
        max_w[leader] = _push(max_w.get(leader, ()), now, rec, cfg.scale_down_window_s, keep_max=True)
        min_w[leader] = _push(min_w.get(leader, ()), now, rec, cfg.scale_up_window_s, keep_max=False)
        down_rec, up_rec = max_w[leader][0][1], min_w[leader][0][1]
        want = min(max(cur_l, up_rec), down_rec)
        hold_group = False
        if want != rec:
            if rec > cur_l:
                why = (
                    f"scale-up stabilization: the lowest recommendation in the last "
                    f"{cfg.scale_up_window_s:g} s was {up_rec}"
                )
            else:
                why = (
                    f"scale-down stabilization: the highest recommendation in the last "
                    f"{cfg.scale_down_window_s:g} s was {down_rec}"
                )
            reasons.append(f"{label}: {rec} → {want}, {why}{coupled if want == cur_l else ''}.")
            hold_group = want == cur_l

        # 5. cooldowns, any member's stamp holds the group
        if want > cur_l:
            since = max((last_up[m] for m in members if m in last_up), default=None)
            if since is not None and now - since < cfg.scale_up_cooldown_s:
                reasons.append(
                    f"{label}: {want} → {cur_l}, scale-up cooldown: the last scale-up was "
                    f"{now - since:g} s ago, cooldown {cfg.scale_up_cooldown_s:g} s{coupled}."
                )
                want, hold_group = cur_l, True
        elif want < cur_l:
            stamps = [t for m in members for t in (last_up.get(m), last_down.get(m)) if t is not None]
            since = max(stamps, default=None)
            if since is not None and now - since < cfg.scale_down_cooldown_s:
                reasons.append(
                    f"{label}: {want} → {cur_l}, scale-down cooldown: the last scale action "
                    f"was {now - since:g} s ago, cooldown {cfg.scale_down_cooldown_s:g} s"
                    f"{coupled}."
                )
                want, hold_group = cur_l, True

        # 6. step limit on the leader, then on the move each follower makes because of it
        final = want
        step = cfg.max_step(cur_l)
        if step is not None and abs(final - cur_l) > step:
            final = cur_l + step if final > cur_l else cur_l - step
            reasons.append(f"{label}: {want} → {final}, max step {step} per tick from {cur_l}.")
        for pool, r in g.ratios.items():
            f_step = cfg.max_step(cur[pool])
            if f_step is None:
                continue
            before = final
            while final != cur_l and abs(follower_count(final, r) - follower_count(cur_l, r)) > f_step:
                final += 1 if final < cur_l else -1
            if final != before:
                reasons.append(f"{label}: {before} → {final}, {pool} may move at most {f_step} per tick.")

        # 7. bounds win if current itself was outside them
        bounded = clamp(final)
        if bounded != final:
            reasons.append(
                f"{label}: {final} → {bounded}, current {cur_l} is outside the bounds "
                f"[{lo}, {'∞' if hi is None else hi}], which override steps and cooldowns."
            )
            final, hold_group = bounded, False

        new = dict(cur) if hold_group and final == cur_l else g.derive(final)
        if hold_group and final == cur_l:
            held.update(members)
        for m in members:
            if new[m] > cur[m]:
                last_up[m] = now
            elif new[m] < cur[m]:
                last_down[m] = now
            last_good[m] = new[m]
        out.update(new)

    for pool, n in inp.current.items():
        out.setdefault(pool, n)  # pools the policy does not manage keep their count
    leaders = {g.leader for g in _groups_for(inp)}  # a pool no longer scaled takes its history with it
    state = StabilizerState(
        max_window={k: v for k, v in max_w.items() if k in leaders},
        min_window={k: v for k, v in min_w.items() if k in leaders},
        last_up_s=last_up,
        last_down_s=last_down,
        last_good=last_good,
    )
    return StabilizerResult(out, reasons, state, infeasible, frozenset(held))
