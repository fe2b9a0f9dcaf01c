"""Stabilizer: bounds, step limits, HPA-style windows over scripted ticks, cooldowns, freeze, fail-static
and coupled groups."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.policy.stabilizer import (
    CoupledGroup,
    StabilizerConfig,
    StabilizerInput,
    StabilizerResult,
    follower_count,
    stabilize,
    stale_signals,
)
from opscale.policy.types import (
    InfeasibilityKind,
    Limits,
    LoadWindow,
    PoolKey,
    PoolLimits,
    Signal,
    StabilizerState,
)

DEC = PoolKey("decode", "attention")
PRE = PoolKey("prefill", "attention")


def tick(
    raw: Mapping[PoolKey, int],
    current: Mapping[PoolKey, int],
    *,
    now_s: float = 0.0,
    config: StabilizerConfig | None = None,
    limits: Limits | None = None,
    state: StabilizerState | None = None,
    stale: Sequence[str] = (),
    frozen: bool = False,
    groups: Sequence[CoupledGroup] = (),
) -> StabilizerResult:
    return stabilize(
        StabilizerInput(
            now_s=now_s,
            raw=raw,
            current=current,
            limits=limits or Limits(),
            config=config or StabilizerConfig(),
            state=state or StabilizerState(),
            stale=stale,
            frozen=frozen,
            groups=groups,
        )
    )


def run(script: Sequence[tuple[float, int]], start: int, config: StabilizerConfig) -> list[int]:
    """Feed (t, raw) ticks, carrying state and applying each decision as the next current."""
    state, cur, out = StabilizerState(), start, []
    for t, raw in script:
        res = tick({DEC: raw}, {DEC: cur}, now_s=t, config=config, state=state)
        state, cur = res.state, res.replicas[DEC]
        out.append(cur)
    return out


def test_no_effects_passes_raw_through() -> None:
    res = tick({DEC: 7}, {DEC: 3})
    assert res.replicas == {DEC: 7} and res.reasons == [] and res.infeasible == []


def test_clamp_to_bounds_with_reason_and_infeasibility() -> None:
    limits = Limits(pools={DEC: PoolLimits(min_replicas=2, max_replicas=10)})
    res = tick({DEC: 15}, {DEC: 8}, limits=limits)
    assert res.replicas[DEC] == 10
    assert "decode/attention: 15 → 10, bounded by max_replicas 10." in res.reasons
    assert res.infeasible[0].kind is InfeasibilityKind.ABOVE_MAX_REPLICAS
    assert (res.infeasible[0].needed, res.infeasible[0].allowed) == (15, 10)
    assert tick({DEC: 0}, {DEC: 8}, limits=limits).replicas[DEC] == 2


def test_step_limit_absolute_fraction_and_the_larger_of_both() -> None:
    res = tick({DEC: 12}, {DEC: 10}, config=StabilizerConfig(max_step_abs=1))
    assert res.replicas[DEC] == 11
    assert res.reasons == ["decode/attention: 12 → 11, max step 1 per tick from 10."]
    # 50% of 10 = 5: 20 → 15, and down 1 → 5.
    assert tick({DEC: 20}, {DEC: 10}, config=StabilizerConfig(max_step_frac=0.5)).replicas[DEC] == 15
    assert tick({DEC: 1}, {DEC: 10}, config=StabilizerConfig(max_step_frac=0.5)).replicas[DEC] == 5
    # abs 2 vs ceil(0.1 × 10) = 1: the larger, 2, applies (HPA selectPolicy: Max).
    both = StabilizerConfig(max_step_abs=2, max_step_frac=0.1)
    assert tick({DEC: 20}, {DEC: 10}, config=both).replicas[DEC] == 12
    # A fraction of zero replicas still allows one step, or nothing could start.
    assert tick({DEC: 5}, {DEC: 0}, config=StabilizerConfig(max_step_frac=0.5)).replicas[DEC] == 1


def test_scale_down_window_uses_max_of_recent_recommendations() -> None:
    # Window 300 s, ticks as listed, current starts at 10:
    #   t=0   raw 10 → 10.
    #   t=60  raw 6  → max(10@0, 6) = 10: hold.
    #   t=120 raw 8  → max(10, 6, 8) = 10: hold.
    #   t=300 raw 5  → window is (0, 300]: 10@0 left; max(6, 8, 5) = 8.
    #   t=360 raw 5  → (60, 360]: max(8@120, 5, 5) = 8.
    #   t=420 raw 5  → (120, 420]: max(5, 5, 5) = 5.
    cfg = StabilizerConfig(scale_down_window_s=300.0)
    script = [(0.0, 10), (60.0, 6), (120.0, 8), (300.0, 5), (360.0, 5), (420.0, 5)]
    assert run(script, 10, cfg) == [10, 10, 10, 8, 8, 5]


def test_a_fresh_stabilizer_counts_what_runs_before_scaling_in() -> None:
    # No state (a control plane just started, or its state was lost): the 10 replicas running count as
    # a recommendation at t=0 (HPA's recordInitialRecommendation), so raw 6 waits for the window.
    cfg = StabilizerConfig(scale_down_window_s=60.0)
    assert run([(0.0, 6), (30.0, 6), (61.0, 6)], 10, cfg) == [10, 10, 6]
    assert run([(0.0, 12)], 10, cfg) == [12]  # scale-up is not held


def test_a_retired_pool_skips_windows_cooldowns_and_steps_but_not_bounds_or_fail_static() -> None:
    """A form its stage left goes to its recommendation at once; min_replicas and fail-static hold."""
    cfg = StabilizerConfig(scale_down_window_s=300.0, scale_down_cooldown_s=60.0, max_step_abs=1)
    first = tick({DEC: 4}, {DEC: 4}, now_s=0.0, config=cfg)
    kept = tick({DEC: 0}, {DEC: 4}, now_s=10.0, config=cfg, state=first.state)
    assert kept.replicas[DEC] == 4  # not retired: the window (and cooldown, and step) hold it
    gone = stabilize(
        StabilizerInput(10.0, {DEC: 0}, {DEC: 4}, Limits(), cfg, first.state, retired=frozenset({DEC}))
    )
    assert gone.replicas[DEC] == 0 and any("at once" in r for r in gone.reasons)
    floor = Limits(pools={DEC: PoolLimits(min_replicas=1)})
    floored = stabilize(
        StabilizerInput(10.0, {DEC: 0}, {DEC: 4}, floor, cfg, first.state, retired=frozenset({DEC}))
    )
    assert floored.replicas[DEC] == 1
    stale = stabilize(
        StabilizerInput(10.0, {DEC: 0}, {DEC: 4}, Limits(), cfg, first.state, ["x"], retired=frozenset({DEC}))
    )
    assert stale.replicas[DEC] == 4  # never scale in on stale data


def test_scale_up_window_uses_min_of_recent_recommendations() -> None:
    # Window 60 s, current 4: t=0 raw 4 → 4; t=30 raw 8 → min(4, 8) = 4; t=45 raw 9 → 4;
    # t=61 raw 9 → window (1, 61]: min(8, 9, 9) = 8; t=70 raw 9 → (10, 70]: min(8, 9, 9, 9) = 8;
    # t=91 raw 9 → (31, 91]: 9.
    cfg = StabilizerConfig(scale_up_window_s=60.0)
    script = [(0.0, 4), (30.0, 8), (45.0, 9), (61.0, 9), (70.0, 9), (91.0, 9)]
    assert run(script, 4, cfg) == [4, 4, 4, 8, 8, 9]


@settings(max_examples=150, deadline=None)
@given(
    recs=st.lists(st.tuples(st.floats(0.1, 50.0), st.integers(0, 30)), min_size=1, max_size=40),
    up_w=st.floats(0.0, 200.0),
    down_w=st.floats(0.0, 200.0),
    cur=st.integers(0, 30),
)
def test_monotonic_queues_equal_full_history(
    recs: list[tuple[float, int]], up_w: float, down_w: float, cur: int
) -> None:
    # The state keeps monotonic queues instead of every tick; the answers must equal the brute force
    # over the full history: scale-up to min over (t−up_w, t], scale-down to max over (t−down_w, t] of
    # the recommendations and (with a window) the count found at the first tick.
    cfg = StabilizerConfig(scale_up_window_s=up_w, scale_down_window_s=down_w)
    state, t, history, seen = StabilizerState(), 0.0, [], []
    for dt, raw in recs:
        t += dt
        history.append((t, raw))
        seen = seen or [(t, cur)]
        res = tick({DEC: raw}, {DEC: cur}, now_s=t, config=cfg, state=state)
        state = res.state
        up = min(v for ts, v in history if ts > t - up_w or ts == t)
        down = max(
            [v for ts, v in history if ts > t - down_w or ts == t] + [v for ts, v in seen if ts > t - down_w]
        )
        assert res.replicas[DEC] == min(max(cur, up), down)
    assert StabilizerState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_cooldowns_each_direction() -> None:
    cfg = StabilizerConfig(scale_up_cooldown_s=60.0, scale_down_cooldown_s=120.0)
    r0 = tick({DEC: 6}, {DEC: 4}, now_s=0.0, config=cfg)
    assert r0.replicas[DEC] == 6 and r0.state.last_up_s[DEC] == 0.0
    r1 = tick({DEC: 8}, {DEC: 6}, now_s=30.0, config=cfg, state=r0.state)
    assert r1.replicas[DEC] == 6
    assert r1.reasons == [
        "decode/attention: 8 → 6, scale-up cooldown: the last scale-up was 30 s ago, cooldown 60 s."
    ]
    assert DEC in r1.held
    r2 = tick({DEC: 8}, {DEC: 6}, now_s=61.0, config=cfg, state=r1.state)
    assert r2.replicas[DEC] == 8
    # Scale-down waits 120 s after the last action of either direction (the scale-up at 61).
    r3 = tick({DEC: 5}, {DEC: 8}, now_s=100.0, config=cfg, state=r2.state)
    assert r3.replicas[DEC] == 8 and "scale-down cooldown" in r3.reasons[0]
    r4 = tick({DEC: 5}, {DEC: 8}, now_s=181.0, config=cfg, state=r3.state)
    assert r4.replicas[DEC] == 5 and r4.state.last_down_s[DEC] == 181.0


def test_frozen_holds_current_and_says_so() -> None:
    res = tick({DEC: 20}, {DEC: 10}, frozen=True, config=StabilizerConfig(max_step_abs=1))
    assert res.replicas[DEC] == 10
    assert res.reasons == [
        "decode/attention: frozen, holding current decode/attention 10 instead of scaling up to 20 as the "
        "policy recommended."
    ]
    down = tick({DEC: 4}, {DEC: 10}, frozen=True)
    assert down.reasons == [
        "decode/attention: frozen, holding current decode/attention 10 instead of scaling in to 4 as the "
        "policy recommended."
    ]
    same = tick({DEC: 10}, {DEC: 10}, frozen=True)
    assert same.reasons == [
        "decode/attention: frozen, holding current decode/attention 10, as the policy recommended."
    ]
    assert res.state.last_up_s == {}


def test_fail_static_holds_last_good_and_never_scales_in() -> None:
    state = StabilizerState(last_good={DEC: 12})
    res = tick({DEC: 3}, {DEC: 10}, stale=["decode_tps was never reported"], state=state)
    assert res.replicas[DEC] == 12  # the last good decision, which is above current
    assert res.reasons == [
        "decode/attention: fail-static because decode_tps was never reported: holding decode/attention 12 "
        "instead of scaling in to 3 as the policy recommended (never scaling in on stale data)."
    ]
    assert res.infeasible[0].kind is InfeasibilityKind.STALE_SIGNALS
    # Scale-out stays blocked by default, allowed when enabled.
    held_up = tick({DEC: 1}, {DEC: 0}, stale=["x"])
    assert held_up.replicas[DEC] == 0
    # A held scale-up reads as one (never as a scale-in).
    assert held_up.reasons == [
        "decode/attention: fail-static because x: holding decode/attention 0 instead of scaling up to 1 as "
        "the policy recommended (no scale-out on stale data)."
    ]
    level = tick({DEC: 10}, {DEC: 10}, stale=["x"])
    assert level.reasons == [
        "decode/attention: fail-static because x: holding decode/attention 10, as the policy recommended."
    ]
    cfg = StabilizerConfig(scale_out_when_stale=True, max_step_abs=4)
    assert tick({DEC: 20}, {DEC: 10}, stale=["x"], config=cfg).replicas[DEC] == 14


@settings(max_examples=300, deadline=None)
@given(
    cur=st.dictionaries(st.sampled_from([DEC, PRE]), st.integers(0, 50), min_size=1),
    raw=st.integers(0, 60),
    last_good=st.integers(0, 60),
    out_ok=st.booleans(),
    step=st.none() | st.integers(1, 10),
    max_replicas=st.none() | st.integers(0, 60),
    ages=st.dictionaries(st.sampled_from(list(Signal)), st.none() | st.floats(0.0, 1000.0)),
    coupled=st.booleans(),
)
def test_fail_static_never_scales_in_on_stale_data(
    cur: dict[PoolKey, int],
    raw: int,
    last_good: int,
    out_ok: bool,
    step: int | None,
    max_replicas: int | None,
    ages: dict[Signal, float | None],
    coupled: bool,
) -> None:
    load = LoadWindow(window_s=10.0, staleness_s=ages)
    required = [Signal.DECODE_TPS, Signal.TBT]
    stale = stale_signals(load, required, 30.0)
    if not stale:
        return  # fresh data: not this property's business
    cfg = StabilizerConfig(scale_out_when_stale=out_ok, max_step_abs=step)
    limits = Limits(default_pool=PoolLimits(max_replicas=max_replicas))
    groups = [CoupledGroup(DEC, {PRE: 0.5})] if coupled else []
    raws = {DEC: raw, PRE: follower_count(raw, 0.5)} if coupled else {p: raw for p in cur}
    res = tick(
        raws,
        cur,
        stale=stale,
        config=cfg,
        limits=limits,
        groups=groups,
        state=StabilizerState(last_good={p: last_good for p in cur}),
    )
    for pool, n in res.replicas.items():
        assert n >= cur.get(pool, 0)
        if not out_ok:
            assert n == max(cur.get(pool, 0), last_good if pool in cur else cur.get(pool, 0))


def test_stale_signals_names_missing_and_old() -> None:
    load = LoadWindow(window_s=10.0, staleness_s={Signal.DECODE_TPS: 45.0, Signal.TTFT: 2.0})
    assert stale_signals(load, [Signal.DECODE_TPS, Signal.TTFT, Signal.TBT], 30.0) == [
        "decode_tps is 45 s old (limit 30 s)",
        "tbt was never reported",
    ]


# --- coupled groups ----------------------------------------------------------------------------------

PD = [CoupledGroup(DEC, {PRE: 0.5})]


def test_group_step_limit_moves_followers_with_the_leader() -> None:
    # Leader 10 → 16 cut to 12 by a step of 2; prefill = ceil(12 × 0.5) = 6, not its raw 8.
    res = tick({DEC: 16, PRE: 8}, {DEC: 10, PRE: 5}, config=StabilizerConfig(max_step_abs=2), groups=PD)
    assert res.replicas == {DEC: 12, PRE: 6}


def test_cooldown_on_one_member_holds_the_group() -> None:
    state = StabilizerState(last_up_s={PRE: 90.0})
    cfg = StabilizerConfig(scale_up_cooldown_s=60.0)
    res = tick({DEC: 16, PRE: 8}, {DEC: 10, PRE: 5}, now_s=100.0, config=cfg, state=state, groups=PD)
    assert res.replicas == {DEC: 10, PRE: 5}
    assert "holding the coupled group decode/attention, prefill/attention" in res.reasons[0]
    assert res.held == {DEC, PRE}


def test_follower_bounds_become_leader_bounds() -> None:
    # prefill ≤ 5 at ratio 0.5 ⇒ decode ≤ 10 (ceil(11 × 0.5) = 6 > 5).
    limits = Limits(pools={PRE: PoolLimits(max_replicas=5)})
    res = tick({DEC: 14, PRE: 7}, {DEC: 8, PRE: 4}, limits=limits, groups=PD)
    assert res.replicas == {DEC: 10, PRE: 5}
    # prefill ≥ 3 ⇒ decode ≥ 5 (ceil(5 × 0.5) = 3, ceil(4 × 0.5) = 2).
    limits = Limits(pools={PRE: PoolLimits(min_replicas=3)})
    assert tick({DEC: 0, PRE: 0}, {DEC: 8, PRE: 4}, limits=limits, groups=PD).replicas == {DEC: 5, PRE: 3}


def test_conflicting_group_bounds_are_reported() -> None:
    # decode ≥ 10 needs prefill ≥ 5, but prefill ≤ 2 caps decode at 4: the ceiling wins.
    limits = Limits(pools={DEC: PoolLimits(min_replicas=10), PRE: PoolLimits(max_replicas=2)})
    res = tick({DEC: 12, PRE: 6}, {DEC: 4, PRE: 2}, limits=limits, groups=PD)
    assert res.replicas == {DEC: 4, PRE: 2}
    assert res.infeasible[0].kind is InfeasibilityKind.BOUNDS_CONFLICT


def test_off_ratio_group_is_put_back_on_ratio() -> None:
    res = tick({DEC: 10, PRE: 5}, {DEC: 10, PRE: 2}, config=StabilizerConfig(max_step_abs=1), groups=PD)
    assert res.replicas == {DEC: 10, PRE: 5}


def test_unmanaged_pools_keep_their_count() -> None:
    other = PoolKey("decode", "ffn")
    assert tick({DEC: 3}, {DEC: 2, other: 7}).replicas == {DEC: 3, other: 7}


@settings(max_examples=300, deadline=None)
@given(
    cur_d=st.integers(0, 40),
    raw_d=st.integers(0, 80),
    ratio=st.sampled_from([0.25, 1 / 3, 0.5, 1.0, 2.0]),
    step=st.none() | st.integers(1, 6),
    frac=st.none() | st.floats(0.05, 1.0),
    up_cd=st.floats(0, 100),
    down_cd=st.floats(0, 100),
    stamp=st.none() | st.floats(0, 200),
    max_p=st.none() | st.integers(0, 40),
    frozen=st.booleans(),
)
def test_group_keeps_ratio(
    cur_d: int,
    raw_d: int,
    ratio: float,
    step: int | None,
    frac: float | None,
    up_cd: float,
    down_cd: float,
    stamp: float | None,
    max_p: int | None,
    frozen: bool,
) -> None:
    groups = [CoupledGroup(DEC, {PRE: ratio})]
    cur = {DEC: cur_d, PRE: follower_count(cur_d, ratio)}
    cfg = StabilizerConfig(
        max_step_abs=step, max_step_frac=frac, scale_up_cooldown_s=up_cd, scale_down_cooldown_s=down_cd
    )
    state = StabilizerState() if stamp is None else StabilizerState(last_up_s={PRE: stamp})
    limits = Limits(pools={PRE: PoolLimits(max_replicas=max_p)})
    res = tick(
        {DEC: raw_d, PRE: follower_count(raw_d, ratio)},
        cur,
        now_s=200.0,
        config=cfg,
        state=state,
        limits=limits,
        groups=groups,
        frozen=frozen,
    )
    assert res.replicas[PRE] == follower_count(res.replicas[DEC], ratio)
    if not frozen and max_p is not None:
        assert res.replicas[PRE] <= max_p or res.replicas == cur


def test_state_round_trips_through_json() -> None:
    cfg = StabilizerConfig(scale_down_window_s=300.0, scale_up_window_s=30.0)
    state = StabilizerState()
    for t, raw in [(0.0, 5), (10.0, 9), (20.0, 7)]:
        state = tick({DEC: raw, PRE: 3}, {DEC: 5, PRE: 3}, now_s=t, config=cfg, state=state).state
    restored = StabilizerState.from_json(json.loads(json.dumps(state.to_json())))
    assert restored == state
    assert replace(restored, last_good={}) != state


def test_min_replicas_holds_from_the_first_tick_without_load() -> None:
    """A new deployment (current 0, nothing recorded) whose every signal is missing is raised to its
    floor. The floor is every pool's, so the follower's own (3 at ratio 0.5) sets the leader's: the
    smallest L with ceil(L × 0.5) >= 3 is 5, and prefill is ceil(5 × 0.5) = 3."""
    limits = Limits(default_pool=PoolLimits(min_replicas=3))
    groups = [CoupledGroup(DEC, {PRE: 0.5})]
    res = tick({DEC: 0, PRE: 0}, {}, stale=["decode_tps was never reported"], limits=limits, groups=groups)
    assert res.replicas == {DEC: 5, PRE: 3}
    assert any("min_replicas 3" in r and "stale" in r for r in res.reasons)
    assert DEC not in res.held  # it moved: not held at current
    # Still never a scale-in: above the floor, fail-static holds what runs.
    held = tick({DEC: 0}, {DEC: 7}, stale=["x"], limits=limits)
    assert held.replicas[DEC] == 7 and DEC in held.held
