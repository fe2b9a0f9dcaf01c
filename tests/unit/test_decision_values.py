"""The decision service's pure parts: the ledger layout round-trips, load conversion, explanations,
protos, lease keys, the in-process lease, and the watch hub."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opscale.actuation import Outcome
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.counters import make_counter_store
from opscale.decisions.explain import explain
from opscale.decisions.record import DecisionView, decode, encode, view_of, with_placement
from opscale.errors import ResourceExhausted, Unavailable
from opscale.policy.pd import PdPolicy
from opscale.policy.types import (
    SLO,
    Limits,
    LoadWindow,
    PolicyInput,
    PoolKey,
    PoolLimits,
    PoolPlan,
    Rule,
    Signal,
)
from opscale.services.decision.lease import InProcessLease, LockTable, lock_key
from opscale.services.decision.publish import QUEUE_SIZE, DecisionHub
from opscale.signals import Arrival, Sample, Throughput, samples_to_writes
from opscale.signals.load import load_from_json, load_to_json, read_load, window_for
from opscale.spec import OperatorKind, PoolRef, Stage
from opscale.wire.decisions import decision_to_pb, explanation_to_pb

DECODE, PREFILL = PoolKey("decode", "model"), PoolKey("prefill", "model")
DECODE_REF = PoolRef(stage=Stage.DECODE, operator=OperatorKind.MODEL)
FRESH = {s: 1.0 for s in Signal}


def _view(
    decode_tps: float = 4000.0,
    current: dict[PoolKey, PoolPlan] | None = None,
    id_: int = 7,
    frozen: bool = False,
    deployment: str = "chat",
    limits: Limits | None = None,
) -> DecisionView:
    """A pd decision on ``decode_tps`` (1000 tok/s per instance, P:D 0.5) as the ledger returns it."""
    policy = PdPolicy.from_params({"target_decode_tps": 1000, "interval_s": 1})
    inp = PolicyInput(
        now_s=100.0,
        deployment=deployment,
        load=LoadWindow(window_s=30, decode_tps=decode_tps, ttft_p99_ms=90, tbt_p99_ms=9, staleness_s=FRESH),
        current=current or {},
        slo=SLO(1000, 100),
        limits=limits or Limits(),
        frozen=frozen,
    )
    out = policy.decide(inp)
    record = encode(
        deployment=deployment,
        spec_version=3,
        tick_at=datetime.fromtimestamp(100, UTC),
        policy=policy.name,
        policy_version=policy.version,
        leader_id="r1",
        inp=inp,
        out=out,
        interval_s=1.0,
        placement=Outcome.PENDING,
    )
    record = with_placement(record, Outcome.APPLIED, "placement applied: 6 to start")
    return decode(dataclasses.replace(record, id=id_))


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("tps", [0.0, 900.0, 4000.0])
def test_the_loops_shortcut_view_equals_the_decoded_row(tps: float, frozen: bool) -> None:
    policy = PdPolicy.from_params({"target_decode_tps": 1000, "interval_s": 1})
    stale = tps == 0.0
    inp = PolicyInput(
        now_s=100.0,
        deployment="chat",
        load=LoadWindow(window_s=30, decode_tps=tps, staleness_s={} if stale else FRESH),
        current={DECODE: PoolPlan(2), PREFILL: PoolPlan(1)},
        slo=SLO(1000, 100),
        limits=Limits(max_step_abs=1),
        frozen=frozen,
    )
    out = policy.decide(inp)
    record = encode(
        deployment="chat",
        spec_version=1,
        tick_at=datetime.fromtimestamp(100, UTC),
        policy="pd",
        policy_version="1",
        leader_id="r",
        inp=inp,
        out=out,
        interval_s=1.0,
        placement=Outcome.NOT_NEEDED,
    )
    record = dataclasses.replace(record, id=5)
    assert view_of(record, inp, out) == decode(record)


def test_ledger_layout_round_trips() -> None:
    v = _view()
    # ceil(4000 / 1000) = 4 decode; ceil(4 × 0.5) = 2 prefill.
    assert {p: plan.replicas for p, plan in v.desired.items()} == {DECODE: 4, PREFILL: 2}
    assert v.raw == {DECODE: 4, PREFILL: 2} and v.effects == []
    assert v.load.decode_tps == 4000 and v.load.staleness_s[Signal.TTFT] == 1.0
    assert v.placement is Outcome.APPLIED and v.placement_message.startswith("placement applied")
    assert v.state.policy == "pd" and v.predicted.gpus == 6 and not v.stale


def test_stabilizer_effects_are_recorded() -> None:
    # max_step_abs 1 from 1 decode: the raw 4 becomes 2 (one step), prefill follows at ceil(2 × 0.5) = 1.
    current = {DECODE: PoolPlan(1), PREFILL: PoolPlan(1)}
    v = _view(current=current, limits=Limits(max_step_abs=1))
    assert {p: plan.replicas for p, plan in v.desired.items()} == {DECODE: 2, PREFILL: 1}
    (effect,) = v.effects
    assert (effect.pool, effect.rule, effect.before, effect.after) == (DECODE, Rule.MAX_STEP, 4, 2)
    assert effect.reason == "decode/model (with prefill/model): 4 → 2, max step 1 per tick from 1."


def test_effects_name_the_rule_that_bound_not_a_guess_from_the_count() -> None:
    # The step limit holds decode at 2, which happens to equal its min_replicas: the rule is still the
    # step (the ledger used to guess "min" from the count).
    current = {DECODE: PoolPlan(1), PREFILL: PoolPlan(1)}
    limits = Limits(pools={DECODE: PoolLimits(min_replicas=2)}, max_step_abs=1)
    v = _view(current=current, limits=limits)
    assert [(e.rule, e.before, e.after) for e in v.effects] == [(Rule.MAX_STEP, 4, 2)]
    assert any("max_step" in line and "4 -> 2" in line for line in explain(v).narrative)


def test_frozen_effect_and_explanation() -> None:
    v = _view(current={DECODE: PoolPlan(1), PREFILL: PoolPlan(1)}, frozen=True)
    assert {e.rule for e in v.effects} == {Rule.FROZEN} and v.frozen
    text = "\n".join(explain(v).narrative)
    assert "frozen" in text and "decode/model 1 (was 1)" in text


def test_explanation_and_protos() -> None:
    v = _view()
    ex = explain(v)
    steps = [line.split(":", 1)[0] for line in ex.narrative]
    assert steps[0] == "Inputs" and "Model" in steps and "Policy" in steps and steps[-1] == "Placement"
    assert any("4,000 tokens/s" in line for line in ex.narrative)
    assert not any("the last 5 s" in line for line in ex.narrative)  # no short window read
    short = dataclasses.replace(v, load=dataclasses.replace(v.load, recent_arrivals=60, recent_s=5.0))
    assert "Inputs: the last 5 s of the window held 60 requests (12.00/s)." in explain(short).narrative
    msg = explanation_to_pb(ex)
    assert msg.decision.id == "7" and msg.decision.tick_ms == 100_000
    assert msg.decision.placement_outcome == pb.PLACEMENT_OUTCOME_APPLIED
    assert {p.replicas for p in msg.decision.pools} == {4, 2}
    assert msg.decision.load.max_staleness_s == 1.0 and msg.decision.prediction.gpus == 6
    assert len(msg.estimates) == 2


def test_never_seen_signal_is_minus_one_on_the_wire() -> None:
    never = LoadWindow(window_s=5, staleness_s={Signal.DECODE_TPS: None, Signal.TTFT: 3.0})
    d = decision_to_pb(dataclasses.replace(_view(), load=never))
    assert d.load.max_staleness_s == -1.0
    assert load_from_json(load_to_json(never)) == never


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(decode=finite, arrivals=finite, ttft=st.none() | finite, age=st.none() | finite)
def test_load_json_round_trips(decode: float, arrivals: float, ttft: float | None, age: float | None) -> None:
    load = LoadWindow(
        window_s=30,
        decode_tps=decode,
        arrival_rate_rps=arrivals,
        ttft_p99_ms=ttft,
        queue_depth={DECODE: 2.5},
        busy_fraction={PREFILL: 0.5},
        staleness_s={Signal.DECODE_TPS: age},
        recent_arrivals=7,
        recent_s=5.0,
    )
    assert load_from_json(load_to_json(load)) == load


def test_window_is_whole_buckets() -> None:
    assert window_for(1.0, 30.0) == 30.0
    assert window_for(2.0, 5.0) == 6.0
    assert window_for(10.0, 1.0) == 10.0


async def test_an_empty_store_reads_as_never_seen() -> None:
    store = make_counter_store("memory://")
    load = await read_load(store, "chat", [DECODE, PREFILL], now_s=1_700_000_000.0, window_s=30.0)
    assert load.decode_tps == 0.0 and load.ttft_p99_ms is None
    assert set(load.staleness_s) == set(Signal) and all(v is None for v in load.staleness_s.values())
    await store.close()


async def _idle_store(work: float, arrival_ago_s: float | None) -> LoadWindow:
    """A store whose engines reported their token counters every second of the last minute (``work``
    decode tokens/s), with one arrival ``arrival_ago_s`` seconds ago (None: none ever)."""
    now = 1_700_000_000.0
    samples = [Sample("chat", now - 60 + i + 0.5, Throughput(work, 0.0, 1.0), DECODE_REF) for i in range(60)]
    if arrival_ago_s is not None:
        samples.append(Sample("chat", now - arrival_ago_s, Arrival(100, 10)))
    store = make_counter_store("memory://")
    await store.apply(samples_to_writes(samples, store.settings), now_s=now)
    load = await read_load(store, "chat", [DECODE, PREFILL], now_s=now, window_s=30.0)
    await store.close()
    return load


async def test_engines_reporting_no_work_and_no_arrivals_read_as_idle_not_stale() -> None:
    # The last request came 50 s ago; the engines report every second and did no work in the window:
    # the rate is a measured zero, as fresh as the engines' reports.
    idle = await _idle_store(0.0, 50.0)
    assert idle.arrival_rate_rps == 0.0
    assert idle.staleness_s[Signal.ARRIVAL_RATE] == pytest.approx(0.5)
    assert idle.staleness_s[Signal.TOKEN_LENGTHS] == pytest.approx(0.5)
    # Never a request, engines watched: idle too (a new deployment without traffic).
    assert (await _idle_store(0.0, None)).staleness_s[Signal.ARRIVAL_RATE] == pytest.approx(0.5)
    # Engines decoding but no arrival counted for 50 s: whoever counts arrivals stopped; stays stale.
    busy = await _idle_store(500.0, 50.0)
    assert busy.staleness_s[Signal.ARRIVAL_RATE] == pytest.approx(50.0)
    assert (await _idle_store(500.0, None)).staleness_s[Signal.ARRIVAL_RATE] is None


def test_lock_keys_are_stable_signed_64_bit() -> None:
    assert lock_key("chat") == lock_key("chat") != lock_key("chat2")
    assert all(-(2**63) <= lock_key(f"d{i}") < 2**63 for i in range(100))


async def test_in_process_lease_excludes_and_releases() -> None:
    table = LockTable()
    a, b = InProcessLease(table, "a"), InProcessLease(table, "b")
    assert await a.sync(["x", "y"]) == {"x", "y"}
    assert await b.sync(["x", "y", "z"]) == {"z"}
    assert await a.sync(["x"]) == {"x"}  # y is no longer wanted (deleted): released
    assert await b.sync(["x", "y", "z"]) == {"y", "z"}
    await a.release_all()
    assert await b.sync(["x", "y", "z"]) == {"x", "y", "z"}


async def test_hub_filters_dedupes_and_drops_laggards() -> None:
    hub = DecisionHub()
    chat, every = hub.subscribe(["chat"], 0), hub.subscribe([], 0)
    hub.publish(_view(id_=1))
    hub.publish(_view(id_=1))  # once only
    late = hub.subscribe(["chat"], 0)  # a watcher that subscribed since gets the re-published id
    hub.publish(_view(id_=1))
    assert (await late.next()).id == 1 and late.queue.empty()
    hub.unsubscribe(late)
    hub.publish(_view(id_=2, deployment="other"))
    assert (await chat.next()).id == 1 and chat.queue.empty()
    assert [(await every.next()).id for _ in range(2)] == [1, 2]
    for i in range(QUEUE_SIZE + 1):
        hub.publish(_view(id_=10 + i, deployment="other"))
    assert every.overflowed and not chat.overflowed
    with pytest.raises(ResourceExhausted):
        while True:
            await asyncio.wait_for(every.next(), 1)
    hub.unsubscribe(chat)
    assert not hub.watching


async def test_a_watch_that_subscribes_after_close_ends_at_once() -> None:
    """A WatchDecisions call accepted just before the server stopped taking calls reaches the handler after
    close(): it must end with UNAVAILABLE too, not hold the shutdown for the whole grace period."""
    hub = DecisionHub()
    early = hub.subscribe([], 0)
    hub.close()
    late = hub.subscribe([], 0)
    for sub in (early, late):
        with pytest.raises(Unavailable, match="shutting down"):
            await asyncio.wait_for(sub.next(), 1)


def test_infinite_inputs_never_reach_the_wire() -> None:
    v = _view()
    assert all(
        math.isfinite(x) for x in (decision_to_pb(v).load.ttft_ms_p99, decision_to_pb(v).prediction.ttft_ms)
    )


async def test_pool_signals_are_left_out_when_pools_are_not_read() -> None:
    store = make_counter_store("memory://")
    load = await read_load(store, "chat", [], now_s=1_700_000_000.0, window_s=10.0)
    skipped = {Signal.QUEUE_DEPTH, Signal.KV_CACHE, Signal.BUSY_FRACTION}
    assert set(load.staleness_s) == set(Signal) - skipped
    await store.close()
