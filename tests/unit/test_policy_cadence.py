"""Whole-model stages keep the model-level cadence inside the operator policy's 1 s ticks
(opscale.policy.cadence), and the correction takes no ratio far below the budget (opscale.policy.adaptive)."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from opscale.policy.adaptive import corrected
from opscale.policy.cadence import WHOLE_MODEL_INTERVAL_S, _restore
from opscale.policy.jsonval import JSONValue
from opscale.policy.model_level import ModelParams
from opscale.policy.operator import OperatorPolicy
from opscale.policy.types import (
    SLO,
    Limits,
    LoadWindow,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolLimits,
    PoolPlan,
    Signal,
    StabilizerState,
)
from tests.unit.test_policy_adaptive import window as steady_window

SLO_ = SLO(2000.0, 100.0)
PREFILL, DECODE = PoolKey("prefill", "model"), PoolKey("decode", "model")


def window(rps: float, stale: bool = False, tbt: float | None = None) -> LoadWindow:
    fresh = steady_window(rps, tbt=tbt)
    return replace(fresh, staleness_s={s: 60.0 for s in Signal}) if stale else fresh


def policy(forecast: bool = False) -> OperatorPolicy:
    # correction off, and by default the forecast: the counts follow the window's rate alone
    return OperatorPolicy.from_params({"model": "llama3-70b", "forecast": forecast, "correction": False})


def tick(pol: OperatorPolicy, t: float, rps: float, prev: PolicyOutput | None, **kw: object) -> PolicyOutput:
    inp = PolicyInput(
        now_s=t,
        deployment="d",
        load=window(rps, bool(kw.pop("stale", False))),
        current=dict(prev.desired) if prev else {},
        slo=SLO_,
        state=prev.state if prev else PolicyState(),
        **kw,  # type: ignore[arg-type]
    )
    return pol.decide(inp)


def whole(out: PolicyOutput) -> dict[PoolKey, int]:
    return {k: p.replicas for k, p in out.desired.items() if p.replicas}


def settled(pol: OperatorPolicy, rps: float = 4.0) -> PolicyOutput:
    """Ticks every second up to t=40 (slot 2 starts) at a steady load, whole-model in both stages."""
    out = None
    for t in range(0, 41):
        out = tick(pol, float(t), rps, out)
    assert out is not None and set(whole(out)) == {PREFILL, DECODE}
    return out


def test_the_model_level_interval_is_the_cadence() -> None:
    assert ModelParams().interval_s == WHOLE_MODEL_INTERVAL_S == 20.0


def test_whole_model_stages_keep_their_counts_until_the_next_slot() -> None:
    pol = policy()
    out = None
    for t in range(0, 41):
        out = tick(pol, float(t), 12.0, out)
    assert out is not None
    before = whole(out)
    for t in range(41, 60):  # the load falls to a third inside the slot: counts and stabilizer history stay
        prev = out
        out = tick(pol, float(t), 4.0, prev)
        assert whole(out) == before
        assert out.state.stabilizer.max_window.get(PREFILL) == prev.state.stabilizer.max_window.get(PREFILL)
        assert any("keeps" in r and "re-planned every 20 s" in r for r in out.reasons)


def test_a_load_past_what_the_slots_plan_covers_scales_up_at_once() -> None:
    pol = policy(forecast=True)
    out = settled(pol)  # planned for 4 req/s at t=40 (a steady history: the forecast adds nothing)
    before = whole(out)
    nxt = tick(pol, 41.0, 12.0, out)
    assert whole(nxt)[PREFILL] > before[PREFILL]
    said = "prefill: scales up inside its 20 s slot: the load (12 req/s) has passed the 4 req/s"
    assert any(r.startswith(said) for r in nxt.reasons)
    # the new slot's plan covers what the forecast made of 12 req/s: a load below it is held again
    held = tick(pol, 42.0, 11.0, nxt)
    assert whole(held) == whole(nxt)
    assert any(r.startswith("prefill: keeps") for r in held.reasons)


@pytest.mark.parametrize("forecast", [True, False])
def test_a_decode_stage_whose_replicas_cannot_hold_the_kv_changes_size_in_its_slot(forecast: bool) -> None:
    """At a steady 10 req/s the slot's plan runs decode on 1 × 4 GPUs (~98k tokens resident). Put
    2 × 2 GPUs in force (78k): the plan's 1 × 4, as many GPUs, is a scale-up for the KV, taken inside the
    slot with the forecast; without it the stage waits for its slot, as the model-level policy does."""
    pol = policy(forecast=forecast)
    out = settled(pol, 10.0)
    assert (out.desired[DECODE].replicas, out.desired[DECODE].gpus_per_replica) == (1, 4)
    small = PoolPlan(2, batch_size=out.desired[DECODE].batch_size, gpus_per_replica=2)
    out = replace(out, desired={**out.desired, DECODE: small})
    nxt = tick(pol, 41.0, 10.0, out)
    if forecast:
        assert (nxt.desired[DECODE].replicas, nxt.desired[DECODE].gpus_per_replica) == (1, 4)
        said = "decode: changes its replicas' size inside its 20 s slot"
        assert any(r.startswith(said) for r in nxt.reasons)
        assert any("the change of size is a scale-up, whatever the GPUs" in r for r in nxt.reasons)
    else:
        assert nxt.desired[DECODE] == small


def test_without_the_forecast_a_held_stage_waits_for_its_slot_as_model_level_does() -> None:
    pol = policy()
    out = settled(pol)
    before = whole(out)
    for t in range(41, 60):
        out = tick(pol, float(t), 12.0, out)
        assert whole(out) == before
        assert not any("scales up inside" in r for r in out.reasons)
    assert whole(tick(pol, 60.0, 12.0, out))[PREFILL] > before[PREFILL]  # the next slot


def test_a_held_stage_scales_down_no_later_than_model_level_would() -> None:
    """The held ticks push nothing into the scale-in window, so the window sees one entry per slot."""
    pol = policy()
    out = None
    for t in range(0, 41):
        out = tick(pol, float(t), 12.0, out)
    assert out is not None
    high = whole(out)[PREFILL]
    for t in range(41, 200):
        out = tick(pol, float(t), 2.0, out)
        if whole(out)[PREFILL] < high:
            break
        if t % 20:  # a held tick: the stabilizer's step on the pool was not taken, nor is it reported
            assert not any(e.pool == PREFILL for e in out.effects)
    # last high recommendation at t=40, scale-in window 30 s: the first slot tick past t=70 lowers it
    assert whole(out)[PREFILL] < high and t == 80


@pytest.mark.parametrize(
    "why",
    ["stale", "frozen", "outside limits"],
)
def test_a_held_stage_is_replanned_at_once_when_the_hold_would_hide_something(why: str) -> None:
    pol = policy()
    out = settled(pol)
    kw: dict[str, object] = {}
    if why == "stale":
        kw["stale"] = True
    elif why == "frozen":
        kw["frozen"] = True
    else:
        n = whole(out)[PREFILL]
        kw["limits"] = Limits({PREFILL: PoolLimits(min_replicas=n + 1, max_replicas=n + 4)})
    nxt = tick(pol, 41.0, 4.0, out, **kw)
    assert not any(r.startswith("prefill") and "re-planned every 20 s" in r for r in nxt.reasons)
    if why == "outside limits":
        assert whole(nxt)[PREFILL] == whole(out)[PREFILL] + 1


def test_operator_pools_are_not_held() -> None:
    """A stage running operator pools follows every tick."""
    pol = OperatorPolicy.from_params(
        {"model": "llama3-70b", "forecast": False, "correction": False, "forms": "operator"}
    )
    out = None
    for t in range(0, 42):
        out = tick(pol, float(t), 4.0 if t < 41 else 12.0, out)
    assert out is not None and not any("re-planned every 20 s" in r for r in out.reasons)
    assert sum(p.replicas for k, p in out.desired.items() if k.stage == "prefill") > 0


def test_a_ratio_far_below_the_budget_is_not_taken() -> None:
    rec: dict[str, JSONValue] = {"rps": 10.0, "ttft_ms": 500.0, "tbt_ms": 12.0, "since": 0.0, "forms": {}}
    last: dict[str, JSONValue] = {"predicted": rec}
    far = corrected(last, window(10.0, tbt=20.0), 60.0, 45.0, SLO_)  # 12 → 20 ms against 100 ms
    assert far.decode == 1.0
    at = corrected(last, window(10.0, tbt=60.0), 60.0, 45.0, SLO_)  # observed past half the budget
    assert at.decode > 1.0
    near: dict[str, JSONValue] = {"predicted": {**rec, "tbt_ms": 55.0}}
    assert corrected(near, window(10.0, tbt=45.0), 60.0, 45.0, SLO_).decode < 1.0  # over-predicted
    assert corrected(last, window(10.0, tbt=20.0), 60.0, 45.0).decode > 1.0  # without an SLO: as before


def test_the_cadence_survives_a_state_round_trip() -> None:
    pol = policy(forecast=True)
    out = settled(pol)
    state = PolicyState.from_json(out.state.to_json())
    nxt = tick(pol, 41.0, 2.0, replace(out, state=state))
    assert whole(nxt) == whole(out)
    assert any(r.startswith("prefill: keeps") for r in nxt.reasons)
    up = tick(pol, 41.0, 12.0, replace(out, state=state))  # and the rate the slot's plan covers with it
    assert whole(up)[PREFILL] > whole(out)[PREFILL]


def test_a_held_tick_restores_every_part_of_the_pools_stabilizer_state() -> None:
    """Whatever the state holds per pool (windows, stamps, last good count, the size its history counts
    in), a held pool gets it back as it was before the tick; another pool keeps the tick's."""
    other = PoolKey("decode", "attention")

    def state(v: int) -> StabilizerState:
        parts: dict[str, object] = {}
        for f in fields(StabilizerState):
            if f.name.endswith("window"):
                parts[f.name] = {DECODE: ((float(v), v),), other: ((float(v), v),)}
            else:
                parts[f.name] = {DECODE: v, other: v}
        return StabilizerState(**parts)  # type: ignore[arg-type]

    before, after = state(1), state(2)
    got = _restore(after, before, {DECODE})
    for f in fields(StabilizerState):
        assert getattr(got, f.name)[DECODE] == getattr(before, f.name)[DECODE], f.name
        assert getattr(got, f.name)[other] == getattr(after, f.name)[other], f.name
