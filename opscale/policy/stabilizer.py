"""The stabilizer every policy's raw replica counts pass through (pure: tick in, decision out).

Effects, in order, for each pool — or for each coupled group, through its leader:

1. **frozen**: hold current, say so, change nothing else.
2. **fail-static**: a required signal is missing or older than ``max_staleness_s`` → hold the last
   decision made on fresh data (or current, whichever is larger) and never scale in; scale-out only if
   ``scale_out_when_stale`` is set (default: hold). ``min_replicas`` still holds: a pool below its floor
   (a new deployment before its first load signal) is raised to it.
3. **bounds**: clamp to [min_replicas, max_replicas].
4. **stabilization windows** (Kubernetes HPA semantics): the clamped recommendation joins the history;
   a scale-up goes no higher than the *min* recommendation of the last ``scale_up_window_s``, a scale-down
   no lower than the *max* of the last ``scale_down_window_s``, where a pool seen first (no state: a new
   control plane, lost state) counts its current replicas, as HPA's ``recordInitialRecommendation`` does.
   A *retired* pool (a form its stage left, ``StabilizerInput.retired``) skips 4–6: the form's own dwell
   and make-before-break already held it, and a window more pays for both forms at once.
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

from dataclasses import dataclass, field

from opscale.policy.stabilizer_config import (
    CoupledGroup,
    History,
    StabilizerConfig,
    StabilizerInput,
    StabilizerResult,
    follower_count,
    groups_for,
    leader_bounds,
    push_window,
    stale_signals,
)
from opscale.policy.stabilizer_words import STALE_IN, STALE_UP, counts_text, held_move, names_text

__all__ = [
    "CoupledGroup",
    "StabilizerConfig",
    "StabilizerInput",
    "StabilizerResult",
    "follower_count",
    "stabilize",
    "stale_signals",
]

from opscale.policy.effects import Rule, StabilizerEffect
from opscale.policy.types import Infeasibility, InfeasibilityKind, PoolKey, StabilizerState


@dataclass(slots=True)
class _Group:
    """One coupled group (or lone pool) on its way through the steps; the steps read and move ``want``
    and say what they did through ``_Run.note``."""

    g: CoupledGroup
    cur: dict[PoolKey, int]
    raw: int
    lo: int
    hi: int | None
    lo_why: str
    hi_why: str
    label: str
    coupled: str

    @property
    def leader(self) -> PoolKey:
        return self.g.leader

    @property
    def cur_l(self) -> int:
        return self.cur[self.g.leader]

    def clamp(self, n: int) -> int:
        return max(self.lo, n if self.hi is None else min(n, self.hi))


@dataclass(slots=True)
class _Run:
    """The tick's mutable state: the next stabilizer state and what the steps said."""

    inp: StabilizerInput
    max_w: dict[PoolKey, History]
    min_w: dict[PoolKey, History]
    last_up: dict[PoolKey, float]
    last_down: dict[PoolKey, float]
    last_good: dict[PoolKey, int]
    reasons: list[str] = field(default_factory=list)
    effects: list[StabilizerEffect] = field(default_factory=list)
    infeasible: list[Infeasibility] = field(default_factory=list)
    held: set[PoolKey] = field(default_factory=set)

    def note(self, grp: _Group, rule: Rule, before: int, after: int, reason: str) -> None:
        self.reasons.append(reason)
        if before != after:
            self.effects.append(StabilizerEffect(grp.leader, rule, before, after, reason))


def _group(run: _Run, g: CoupledGroup) -> _Group:
    inp = run.inp
    cur = {m: inp.current.get(m, 0) for m in g.members}
    lo, hi, lo_why, hi_why = leader_bounds(g, inp.limits)
    label = str(g.leader) if not g.ratios else f"{g.leader} (with {names_text(g.ratios)})"
    coupled = f"; holding the coupled group {names_text(g.members)}" if g.ratios else ""
    if hi is not None and lo > hi:
        run.infeasible.append(
            Infeasibility(
                InfeasibilityKind.BOUNDS_CONFLICT,
                f"{label}: the lower bound {lo} ({lo_why}) exceeds the upper bound {hi} ({hi_why}); the "
                f"upper bound wins.",
                g.leader,
                lo,
                hi,
            )
        )
        lo = hi
    return _Group(g, cur, inp.raw[g.leader], lo, hi, lo_why, hi_why, label, coupled)


def _frozen(run: _Run, grp: _Group) -> dict[PoolKey, int]:
    """1. Frozen: hold current, change nothing else."""
    run.held.update(grp.g.members)
    run.note(
        grp,
        Rule.FROZEN,
        grp.raw,
        grp.cur_l,
        f"{grp.label}: frozen, holding current {counts_text(grp.cur)}{held_move(grp.raw, grp.cur_l)}.",
    )
    return dict(grp.cur)


def _fail_static(run: _Run, grp: _Group) -> dict[PoolKey, int]:
    """2. Fail-static: hold the last good decision (or current, if larger); scale out only if allowed."""
    inp, cfg, cur = run.inp, run.inp.config, grp.cur
    stale = "; ".join(inp.stale)
    hold = {m: max(cur[m], run.last_good.get(m, cur[m])) for m in grp.g.members}
    floored = hold[grp.leader] < grp.lo
    if floored:  # min_replicas holds from the first tick, load or not; raising to it is no scale-in
        hold = {m: max(hold[m], n) for m, n in grp.g.derive(grp.clamp(hold[grp.leader])).items()}
        why = f"raised to {grp.lo_why} although signals are stale (a floor holds with or without load)"
        run.note(
            grp,
            Rule.MIN,
            grp.cur_l,
            hold[grp.leader],
            f"{grp.label}: {grp.cur_l} → {hold[grp.leader]}, {why}.",
        )
        run.last_up.update({m: inp.now_s for m in grp.g.members if hold[m] > cur[m]})
    if cfg.scale_out_when_stale and grp.raw > hold[grp.leader]:
        step = cfg.max_step(grp.cur_l)
        grow = grp.clamp(grp.raw if step is None else min(grp.raw, grp.cur_l + step))
        hold = {m: max(hold[m], n) for m, n in grp.g.derive(grow).items()}
        run.note(
            grp,
            Rule.FAIL_STATIC,
            grp.raw,
            hold[grp.leader],
            f"{grp.label}: fail-static because {stale}, but scale-out is enabled: {grp.raw} → "
            f"{hold[grp.leader]} (never scaling in on stale data).",
        )
        for m in grp.g.members:
            if hold[m] > cur[m]:
                run.last_up[m] = inp.now_s
    else:
        if not floored:
            run.held.update(grp.g.members)
        run.note(
            grp,
            Rule.FAIL_STATIC,
            grp.raw,
            hold[grp.leader],
            f"{grp.label}: fail-static because {stale}: holding {counts_text(hold)}"
            f"{held_move(grp.raw, hold[grp.leader], STALE_UP, STALE_IN)}.",
        )
    return hold


def _bound(run: _Run, grp: _Group) -> int:
    """3. Clamp the recommendation to [min, max]; above max is also an infeasibility."""
    raw, hi = grp.raw, grp.hi
    rec = grp.clamp(raw)
    if rec != raw:
        above = hi is not None and raw > hi
        bound = grp.hi_why if above else grp.lo_why
        run.note(
            grp, Rule.MAX if above else Rule.MIN, raw, rec, f"{grp.label}: {raw} → {rec}, bounded by {bound}."
        )
        if above:
            run.infeasible.append(
                Infeasibility(
                    InfeasibilityKind.ABOVE_MAX_REPLICAS,
                    f"{grp.leader} needs {raw} replicas for the load but {grp.hi_why} allows {hi}.",
                    grp.leader,
                    raw,
                    hi,
                )
            )
    return rec


def _windows(run: _Run, grp: _Group, rec: int) -> tuple[int, bool]:
    """4. Stabilization windows (the history includes this tick). Returns (want, whether that holds the
    group at current)."""
    cfg, now, leader, cur_l = run.inp.config, run.inp.now_s, grp.leader, grp.cur_l
    seed = run.max_w.get(leader, ((now, cur_l),))  # first sight: what runs counts (module docstring, 4)
    run.max_w[leader] = push_window(seed, now, rec, cfg.scale_down_window_s, keep_max=True)
    run.min_w[leader] = push_window(
        run.min_w.get(leader, ()), now, rec, cfg.scale_up_window_s, keep_max=False
    )
    down_rec, up_rec = run.max_w[leader][0][1], run.min_w[leader][0][1]
    want = min(max(cur_l, up_rec), down_rec)
    if want == rec:
        return want, False
    if rec > cur_l:
        rule = Rule.SCALE_UP_WINDOW
        why = (
            f"scale-up stabilization: the lowest recommendation in the last {cfg.scale_up_window_s:g} s "
            f"was {up_rec}"
        )
    else:
        rule = Rule.SCALE_DOWN_WINDOW
        why = (
            f"scale-down stabilization: the highest recommendation in the last {cfg.scale_down_window_s:g} s "
            f"was {down_rec}"
        )
    held = want == cur_l
    run.note(grp, rule, rec, want, f"{grp.label}: {rec} → {want}, {why}{grp.coupled if held else ''}.")
    return want, held


def _cooldowns(run: _Run, grp: _Group, want: int) -> int | None:
    """5. Cooldowns; a stamp on any member holds the group. Returns current when one holds, else None."""
    cfg, now, cur_l, members = run.inp.config, run.inp.now_s, grp.cur_l, grp.g.members
    if want > cur_l:
        since = max((run.last_up[m] for m in members if m in run.last_up), default=None)
        if since is not None and now - since < cfg.scale_up_cooldown_s:
            run.note(
                grp,
                Rule.SCALE_UP_COOLDOWN,
                want,
                cur_l,
                f"{grp.label}: {want} → {cur_l}, scale-up cooldown: the last scale-up was {now - since:g} s "
                f"ago, cooldown {cfg.scale_up_cooldown_s:g} s{grp.coupled}.",
            )
            return cur_l
    elif want < cur_l:
        stamps = [t for m in members for t in (run.last_up.get(m), run.last_down.get(m)) if t is not None]
        since = max(stamps, default=None)
        if since is not None and now - since < cfg.scale_down_cooldown_s:
            run.note(
                grp,
                Rule.SCALE_DOWN_COOLDOWN,
                want,
                cur_l,
                f"{grp.label}: {want} → {cur_l}, scale-down cooldown: the last scale action was "
                f"{now - since:g} s ago, cooldown {cfg.scale_down_cooldown_s:g} s{grp.coupled}.",
            )
            return cur_l
    return None


def _step(run: _Run, grp: _Group, want: int) -> int:
    """6. Step limit on the leader, then on the move each follower makes because of it."""
    cfg, cur_l = run.inp.config, grp.cur_l
    final = want
    step = cfg.max_step(cur_l)
    if step is not None and abs(final - cur_l) > step:
        final = cur_l + step if final > cur_l else cur_l - step
        run.note(
            grp,
            Rule.MAX_STEP,
            want,
            final,
            f"{grp.label}: {want} → {final}, max step {step} per tick from {cur_l}.",
        )
    for pool, r in grp.g.ratios.items():
        f_step = cfg.max_step(grp.cur[pool])
        if f_step is None:
            continue
        before = final
        while final != cur_l and abs(follower_count(final, r) - follower_count(cur_l, r)) > f_step:
            final += 1 if final < cur_l else -1
        if final != before:
            run.note(
                grp,
                Rule.FOLLOWER_STEP,
                before,
                final,
                f"{grp.label}: {before} → {final}, {pool} may move at most {f_step} per tick.",
            )
    return final


def _rebound(run: _Run, grp: _Group, final: int) -> int:
    """7. The bounds win over steps and cooldowns when current itself was outside them."""
    bounded = grp.clamp(final)
    if bounded != final:
        run.note(
            grp,
            Rule.BOUNDS,
            final,
            bounded,
            f"{grp.label}: {final} → {bounded}, current {grp.cur_l} is outside the bounds "
            f"[{grp.lo}, {'∞' if grp.hi is None else grp.hi}], which override steps and cooldowns.",
        )
    return bounded


def _commit(run: _Run, grp: _Group, final: int, hold_group: bool) -> dict[PoolKey, int]:
    """The group's counts, and the stamps and last-good counts the next tick continues from."""
    now = run.inp.now_s
    held = hold_group and final == grp.cur_l
    new = dict(grp.cur) if held else grp.g.derive(final)
    if held:
        run.held.update(grp.g.members)
    for m in grp.g.members:
        if new[m] > grp.cur[m]:
            run.last_up[m] = now
        elif new[m] < grp.cur[m]:
            run.last_down[m] = now
        run.last_good[m] = new[m]
    return new


def _retire(run: _Run, grp: _Group) -> dict[PoolKey, int]:
    """A retired pool: its bounded recommendation at once, windows restarted (module docstring, 4)."""
    cfg, now, leader, rec = run.inp.config, run.inp.now_s, grp.leader, _bound(run, grp)
    run.max_w[leader] = push_window((), now, rec, cfg.scale_down_window_s, keep_max=True)
    run.min_w[leader] = push_window((), now, rec, cfg.scale_up_window_s, keep_max=False)
    if rec < grp.cur_l:
        run.reasons.append(f"{grp.label}: {grp.cur_l} → {rec} at once, a form its stage left (no window).")
    return _commit(run, grp, rec, False)


def _decide_group(run: _Run, grp: _Group) -> dict[PoolKey, int]:
    if run.inp.frozen:
        return _frozen(run, grp)
    if run.inp.stale:
        return _fail_static(run, grp)
    if grp.leader in run.inp.retired and not grp.g.ratios:
        return _retire(run, grp)
    rec = _bound(run, grp)
    want, hold_group = _windows(run, grp, rec)
    held_at = _cooldowns(run, grp, want)
    if held_at is not None:
        want, hold_group = held_at, True
    final = _step(run, grp, want)
    bounded = _rebound(run, grp, final)
    if bounded != final:
        final, hold_group = bounded, False
    return _commit(run, grp, final, hold_group)


def stabilize(inp: StabilizerInput) -> StabilizerResult:
    """The steps of the module docstring, group by group; every change a step makes to a count is an
    effect in the result (its rule, the count before and after, and the reason sentence)."""
    st = inp.state
    run = _Run(
        inp,
        dict(st.max_window),
        dict(st.min_window),
        dict(st.last_up_s),
        dict(st.last_down_s),
        dict(st.last_good),
    )
    if inp.stale:
        run.infeasible.append(
            Infeasibility(InfeasibilityKind.STALE_SIGNALS, "Fail-static: " + "; ".join(inp.stale) + ".")
        )
    out: dict[PoolKey, int] = {}
    groups = groups_for(inp)
    for g in groups:
        out.update(_decide_group(run, _group(run, g)))
    for pool, n in inp.current.items():
        out.setdefault(pool, n)  # pools the policy does not manage keep their count
    leaders = {g.leader for g in groups}  # a pool no longer scaled takes its history with it
    state = StabilizerState(
        max_window={k: v for k, v in run.max_w.items() if k in leaders},
        min_window={k: v for k, v in run.min_w.items() if k in leaders},
        last_up_s=run.last_up,
        last_down_s=run.last_down,
        last_good=run.last_good,
    )
    return StabilizerResult(out, run.reasons, state, run.infeasible, frozenset(run.held), run.effects)
