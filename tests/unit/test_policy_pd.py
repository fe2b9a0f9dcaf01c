"""pd (HeteroScale): proportional decode-TPS rule, P/D ratio, dead band, safety tiers, soft scale-in,
cooldowns."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.errors import InvalidArgument
from opscale.policy.pd import PdPolicy, PdState
from opscale.policy.stabilizer import follower_count
from opscale.policy.types import (
    SLO,
    Limits,
    LoadWindow,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolPlan,
    Signal,
)

D = PoolKey("decode", "model")
P = PoolKey("prefill", "model")
SLO_ = SLO(ttft_ms=1000.0, tbt_ms=100.0)
FRESH = {Signal.DECODE_TPS: 1.0, Signal.TTFT: 1.0, Signal.TBT: 1.0}


def policy(**params: object) -> PdPolicy:
    return PdPolicy.from_params({"target_decode_tps": 1000.0, **params})


def inp(
    tps: float,
    cur_d: int,
    cur_p: int | None = None,
    *,
    now_s: float = 0.0,
    tbt: float = 50.0,
    ttft: float = 500.0,
    state: PolicyState | None = None,
    ratio: float = 0.5,
    staleness: Mapping[Signal, float | None] | None = None,
    limits: Limits | None = None,
) -> PolicyInput:
    cur_p = follower_count(cur_d, ratio) if cur_p is None else cur_p
    load = LoadWindow(
        window_s=15.0,
        decode_tps=tps,
        tbt_p99_ms=tbt,
        ttft_p99_ms=ttft,
        staleness_s=FRESH if staleness is None else staleness,
    )
    return PolicyInput(
        now_s=now_s,
        deployment="dep",
        load=load,
        current={D: PoolPlan(cur_d, gpus_per_replica=2), P: PoolPlan(cur_p)},
        slo=SLO_,
        limits=limits or Limits(),
        state=state or PolicyState(),
    )


def counts(out: PolicyOutput) -> tuple[int, int]:
    return out.desired[D].replicas, out.desired[P].replicas


def test_proportional_rule_and_ratio() -> None:
    # u = 15000 / (10 × 1000) = 150% > 110%: ceil(15000 / 1000) = 15 decode, ceil(15 × 0.5) = 8 prefill.
    out = policy().decide(inp(15000.0, 10))
    assert counts(out) == (15, 8)
    assert out.raw == {D: 15, P: 8}
    assert out.desired[D].gpus_per_replica == 2  # the pool's shape is kept
    assert any("ceil(15000 / 1000) = 15 decode instances" in r for r in out.reasons)
    assert any("ceil(15 × 0.5) = 8 prefill" in r for r in out.reasons)


def test_ratio_given_as_text() -> None:
    # "1:3": prefill = ceil(12 × 1/3) = 4.
    out = policy(prefill_per_decode="1:3").decide(inp(12000.0, 6, 2))
    assert counts(out) == (12, 4)


def test_dead_band_holds() -> None:
    # u = 9000 / 10000 = 90% ∈ [70%, 110%]; and 7000 → 70%, 11000 → 110% are inside (closed band).
    for tps in (9000.0, 7000.0, 11000.0):
        out = policy().decide(inp(tps, 10))
        assert counts(out) == (10, 5), tps
        assert any("inside the dead band" in r for r in out.reasons)
    # 11500 → 115%: out of the band, ceil(11.5) = 12.
    assert counts(policy().decide(inp(11500.0, 10))) == (12, 6)


@pytest.mark.parametrize(
    ("tbt", "expected_d", "tier"),
    [
        (100.0, 10, None),  # exactly 1.0× the SLO: not a breach
        (100.1, 11, "moderate"),  # > 1.0×: at least ceil(10 × 1.1) = 11
        (150.0, 11, "moderate"),  # 1.5× is not > 1.5×: still moderate
        (150.1, 12, "severe"),  # > 1.5×: at least ceil(10 × 1.2) = 12
    ],
)
def test_safety_tiers_fire_at_the_right_multiples(tbt: float, expected_d: int, tier: str | None) -> None:
    out = policy().decide(inp(10000.0, 10, tbt=tbt))  # u = 100%: the dead band alone would hold
    assert out.desired[D].replicas == expected_d
    assert out.desired[P].replicas == follower_count(expected_d, 0.5)
    fired = [r for r in out.reasons if r.startswith("Safety net")]
    assert (tier is None and not fired) or (tier is not None and f"({tier})" in fired[0])


def test_safety_net_uses_ttft_too_and_adds_at_least_one() -> None:
    # TTFT 1.6× on 2 decode instances: ceil(2 × 1.2) = 3 — and at least +1 anyway.
    out = policy().decide(inp(2000.0, 2, ttft=1600.0))
    assert counts(out) == (3, 2)
    assert any("TTFT p99 1600 ms is 1.60× the 1000 ms SLO" in r for r in out.reasons)


def test_safety_net_does_not_shrink_a_larger_proportional_answer() -> None:
    out = policy().decide(inp(30000.0, 10, tbt=120.0))
    assert counts(out) == (30, 15)


def test_cooldowns_scale_out_shorter_than_scale_in() -> None:
    pol = policy()
    first = pol.decide(inp(15000.0, 10, now_s=0.0))  # scale out to 15/8
    assert counts(first) == (15, 8)
    # 30 s later more load: scale-out cooldown is 60 s.
    held = pol.decide(inp(25000.0, 15, 8, now_s=30.0, state=first.state))
    assert counts(held) == (15, 8) and any("scale-up cooldown" in r for r in held.reasons)
    assert counts(pol.decide(inp(25000.0, 15, 8, now_s=61.0, state=first.state))) == (25, 13)
    # 120 s after the scale-out, little load: the 300 s scale-in cooldown holds.
    quiet = pol.decide(inp(3000.0, 15, 8, now_s=120.0, state=first.state))
    assert counts(quiet) == (15, 8) and not quiet.draining
    assert any("scale-down cooldown" in r for r in quiet.reasons)


def _soft_start(pol: PdPolicy) -> PolicyOutput:
    # u = 5000 / 10000 = 50% < 70%: ceil(5) = 5 decode, ceil(2.5) = 3 prefill — softly.
    out = pol.decide(inp(5000.0, 10, now_s=0.0))
    assert counts(out) == (10, 5)  # nothing stops yet
    assert out.draining == {D: 5, P: 2}  # 5 decode and 2 prefill leave routing
    assert PdState.from_json(out.state.data).pending == {D: 5, P: 3}
    assert out.state.stabilizer.last_down_s == {}  # no cooldown stamp until committed
    return out


def test_soft_scale_in_commits_when_slo_holds() -> None:
    pol = policy()
    out = _soft_start(pol)
    out = pol.decide(inp(5000.0, 10, now_s=15.0, state=out.state))
    assert counts(out) == (10, 5) and out.draining == {D: 5, P: 2}
    out = pol.decide(inp(5000.0, 10, now_s=30.0, state=out.state))  # second tick within SLO: commit
    assert counts(out) == (5, 3) and out.draining == {}
    assert any("Soft scale-in committed" in r for r in out.reasons)
    assert out.state.stabilizer.last_down_s == {D: 30.0, P: 30.0}
    assert PdState.from_json(out.state.data).pending == {}


def test_soft_scale_in_restores_on_slo_breach() -> None:
    pol = policy()
    out = _soft_start(pol)
    # TBT 120 ms = 1.2× SLO while draining: restore, and the safety net adds +10%: ceil(11.0) = 11.
    out = pol.decide(inp(5000.0, 10, now_s=15.0, tbt=120.0, state=out.state))
    assert out.draining == {}
    assert counts(out) == (11, 6)
    assert any("Soft scale-in cancelled: TBT p99 120 ms is 1.20× the 100 ms SLO" in r for r in out.reasons)
    assert PdState.from_json(out.state.data).pending == {}


def test_soft_scale_in_restores_when_latency_goes_stale() -> None:
    pol = policy()
    out = _soft_start(pol)
    stale = {Signal.DECODE_TPS: 1.0, Signal.TTFT: 1.0, Signal.TBT: 600.0}
    out = pol.decide(inp(5000.0, 10, now_s=15.0, staleness=stale, state=out.state))
    assert counts(out) == (10, 5) and out.draining == {}
    assert any("cancelled" in r and "fresh" in r for r in out.reasons)


def test_soft_scale_in_cancelled_when_load_returns() -> None:
    pol = policy()
    out = _soft_start(pol)
    out = pol.decide(inp(9000.0, 10, now_s=15.0, state=out.state))  # 90%: dead band, no scale-in
    assert counts(out) == (10, 5) and out.draining == {}
    assert any(
        "Soft scale-in cancelled" in r and "restoring 5 decode and 2 prefill" in r for r in out.reasons
    )


def test_soft_scale_in_defers_only_the_shrinking_pool() -> None:
    # Ratio reconfigured from 0.5 to 0.25 while load rises: decode 10 → ceil(15000/1000) = 15 now;
    # prefill ceil(15 × 0.25) = 4 < 5, so one prefill instance drains instead of stopping.
    out = policy(prefill_per_decode=0.25).decide(inp(15000.0, 10, 5))
    assert counts(out) == (15, 5)
    assert out.draining == {P: 1}
    assert out.state.stabilizer.last_up_s == {D: 0.0} and out.state.stabilizer.last_down_s == {}


def test_no_soft_scale_in_without_latency_and_hard_scale_in_when_disabled() -> None:
    blind = {Signal.DECODE_TPS: 1.0}
    out = policy().decide(inp(5000.0, 10, staleness=blind))
    assert counts(out) == (10, 5) and out.draining == {}
    assert any("Soft scale-in not started" in r for r in out.reasons)
    assert counts(policy(soft_scale_in_ticks=0).decide(inp(5000.0, 10, staleness=blind))) == (5, 3)


def test_fail_static_on_stale_decode_tps() -> None:
    out = policy().decide(
        inp(0.0, 10, staleness={Signal.DECODE_TPS: 300.0, Signal.TTFT: 1.0, Signal.TBT: 1.0})
    )
    assert counts(out) == (10, 5)
    assert any("fail-static" in r for r in out.reasons)


def test_state_round_trips_and_other_policys_state_is_ignored() -> None:
    out = _soft_start(policy())
    assert PolicyState.from_json(json.loads(json.dumps(out.state.to_json()))) == out.state
    foreign = PolicyState(policy="utilization", data={"pending": {"decode/model": 1}})
    assert policy().decide(inp(9000.0, 10, state=foreign)).draining == {}


def test_params_are_validated_with_reasons() -> None:
    with pytest.raises(InvalidArgument, match="target_decode_tps"):
        PdPolicy.from_params({})
    with pytest.raises(InvalidArgument, match="dead band"):
        policy(scale_in_threshold=1.0, scale_out_threshold=1.0)
    with pytest.raises(InvalidArgument, match="severe_breach"):
        policy(severe_breach=1.0)
    with pytest.raises(InvalidArgument, match="P:D ratio"):
        policy(prefill_per_decode="1:0")
    assert policy().interval_s == 15.0


@settings(max_examples=300, deadline=None)
@given(
    tps=st.floats(0.0, 200_000.0),
    cur_d=st.integers(0, 120),
    ratio=st.sampled_from([0.25, 1 / 3, 0.5, 2 / 3, 1.0, 1.5, 2.0]),
    tbt=st.floats(1.0, 400.0),
    ttft=st.floats(10.0, 4000.0),
    step=st.none() | st.integers(1, 10),
    ticks=st.integers(1, 4),
)
def test_ratio_holds_for_all_loads(
    tps: float, cur_d: int, ratio: float, tbt: float, ttft: float, step: int | None, ticks: int
) -> None:
    pol = policy(prefill_per_decode=ratio)
    state, d = PolicyState(), cur_d
    p = follower_count(d, ratio)
    for k in range(ticks):
        out = pol.decide(
            inp(
                tps,
                d,
                p,
                now_s=400.0 * k,
                tbt=tbt,
                ttft=ttft,
                ratio=ratio,
                state=state,
                limits=Limits(max_step_abs=step),
            )
        )
        d, p = counts(out)
        assert p == follower_count(d, ratio)
        serving = {k2: out.desired[k2].replicas - out.draining.get(k2, 0) for k2 in (D, P)}
        assert serving[P] == follower_count(serving[D], ratio)
        state = out.state
