"""Whole-model stages are decided at the model-level cadence.

The ``operator`` policy ticks every second so that its operator pools follow the load as soon as the
load moves. A stage that runs whole-model replicas (the hybrid's other form, ``opscale.policy.hybrid``)
gains nothing from that pace and pays for it. Every tick plans from the last 30 s window, which moves
by 1/30 of its data per tick, so a 1 s tick catches every short burst at its peak. The whole replica it
then starts takes 12–17 s to load (``opscale.model.startup``), so the burst is mostly over when it is
ready, and the stabilizer holds it for its scale-in window.

Measured on evaluate's quick matrix (Azure conv ×4, 600 s, forecast off, every stage in whole-model
form, the same planner): ticking every second spent 4–13% more GPU-hours than ticking every 20 s, at
the same attainment (llama3-70b 2.22 against 2.08 GPU-h, both 99.9%; qwen2-57b-a14b 1.02 against 0.91;
mixtral-8x7b 0.77 against 0.72). Operator pools on mixtral-8x22b were cheaper at 1 s (2.71 against
2.80 GPU-h), so that pace is kept for them.

The rule, per stage: a stage that ran whole-model replicas at its last full decision, still does by
this tick's plan, and is not switching form keeps the replica count in force for the rest of that
decision's ``WHOLE_MODEL_INTERVAL_S`` slot (slots are multiples of the interval, as the model-level
policy's ticks are). Its pool skips the stabilizer on those ticks, so the stabilizer's windows see one
recommendation per slot, as they do for the model-level policy. Any of these re-plans the stage at
once: a frozen deployment, stale signals, an infeasibility other than requests no configuration can
serve, or a count in force outside the limits. A stage so held makes the model-level policy's decisions
at the model-level policy's times. Cadence is not a burst defence for either: the forecast over
start-up (``opscale.policy.adaptive``) is.

Except when the load outruns the slot's plan, where the policy forecasts (``scale_up_in_slot``). Each
full decision keeps the rate it planned for (after the forecast: ``planned_rps``, kept per stage as
``covered``). A held tick whose measured rate has passed it by more than the window's Poisson noise
(``window_noise``: 2 standard errors of λ), and whose plan asks for more GPUs than are in force, scales
up at once and starts a new slot; scale-in still waits. Past that rate the slot's plan no longer covers
the load, and holding it only delays capacity the load already needs. So does a plan that changes the
decode replicas' size because those in force cannot hold the resident KV it sizes for (``upsized`` in
the policy's state; ``opscale.policy.pipeline``), whatever the rate and the GPUs. The demo's replay
(llama3-8b, Azure conv ×20, ~110 → 150 req/s in 40 s) planned a 6th and a 7th prefill replica at t = 48
and 54 s and got both at t = 60 s plus start-up; each prompt that arrived within those 4 s waited past
the 2 s TTFT, 3.3% of the replay (the model-level policy, on its own 20 s ticks, missed the same). With
this rule: 100% in SLO for 1.3% more GPU-hours (0.360 → 0.365), and evaluate's quick matrix within +0.2%
of its GPU-hours. Triggered by any significant upward trend instead, the rule met the demo too but cost
up to +9.9% there (its Azure conv window opens on a climb); without the noise margin, up to +2.7%
(BENCHMARKS.md).

The rule is part of the burst defence, so it runs only with the forecast. With the forecast off (the
cheapest point of evaluate's sweep) the slot's plan is for the window's rate alone, and the rule
re-planned a whole-model stage on every rise of two standard errors, which the model-level policy
waits out: on the quick matrix, forecast off, it cost 3.8–5.4% GPU-hours on four scenarios at the same
attainment (llama3-70b, mixtral-8x7b, qwen2-57b-a14b, the long prompts) and bought attainment on one
(mixtral-8x22b, 98.2% → 99.9% for +3.4%). Without the forecast a held stage makes the model-level
policy's decisions at its times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import TypeVar

from opscale.policy.adaptive import window_noise
from opscale.policy.jsonval import JSONValue, finite_or_none
from opscale.policy.recent import recent_floor
from opscale.policy.stabilizer_config import stale_signals
from opscale.policy.types import (
    InfeasibilityKind,
    PolicyInput,
    PolicyOutput,
    PoolKey,
    Signal,
    StabilizerState,
)

V = TypeVar("V")

WHOLE_MODEL_INTERVAL_S = 20.0  # the model-level policy's control interval (opscale.policy.model_level)


def _slot(t: float, interval_s: float) -> int:
    return math.floor(t / interval_s)


def _in_bounds(inp: PolicyInput, pool: PoolKey) -> bool:
    plan, lim = inp.current.get(pool), inp.limits.for_pool(pool)
    if plan is None or plan.replicas <= 0:
        return False
    ceiling = plan.replicas if lim.max_replicas is None else lim.max_replicas
    return lim.min_replicas <= plan.replicas <= ceiling


def _back(new: Mapping[PoolKey, V], old: Mapping[PoolKey, V], held: set[PoolKey]) -> dict[PoolKey, V]:
    out = {k: v for k, v in new.items() if k not in held}
    out.update({k: old[k] for k in held if k in old})
    return out


def _restore(state: StabilizerState, before: StabilizerState, held: set[PoolKey]) -> StabilizerState:
    """``state`` with the ``held`` pools' entries — in every part of the state — as they were ``before``
    this tick (the tick did not happen for them)."""
    parts = {f.name: _back(getattr(state, f.name), getattr(before, f.name), held) for f in fields(state)}
    return StabilizerState(**parts)


def hold_whole_stages(
    inp: PolicyInput,
    out: PolicyOutput,
    before: Mapping[str, JSONValue],
    required: Iterable[Signal],
    max_staleness_s: float,
    interval_s: float = WHOLE_MODEL_INTERVAL_S,
    scale_up_in_slot: bool = True,
) -> PolicyOutput:
    """``out`` (this tick's full decision) with every whole-model stage inside its slot kept as in force
    (module docstring). ``before``: the policy's own state at the start of the tick; the kept state's
    ``held`` maps each whole-model stage to the time of its last full decision; ``scale_up_in_slot``: a
    load past the slot's planned rate re-plans the stage (the policy forecasts)."""
    data = dict(out.state.data)
    forms, switched = data.get("forms"), data.get("switched")
    forms = forms if isinstance(forms, dict) else {}
    switched = switched if isinstance(switched, dict) else {}
    last = before.get("held")
    last = last if isinstance(last, dict) else {}
    was = before.get("forms")
    was = was if isinstance(was, dict) else {}
    steady = (
        not inp.frozen
        and not stale_signals(inp.load, required, max_staleness_s)
        and all(i.kind is InfeasibilityKind.UNSERVABLE_REQUESTS for i in out.infeasible)
    )
    planned = finite_or_none(data.get("planned_rps"))
    noise = window_noise(inp.load.arrival_rate_rps, inp.load.window_s)
    covered = before.get("covered")
    covered = covered if isinstance(covered, dict) else {}
    upsized = data.pop("upsized", None)  # this tick's, read here only: not kept in the state
    upsized = upsized if isinstance(upsized, list) else []
    stamps: dict[str, JSONValue] = {}
    cover: dict[str, JSONValue] = {}
    desired, raw, kept, said = dict(out.desired), dict(out.raw), [], []
    for stage, form in sorted(forms.items()):
        if form != "model":
            continue
        pool, t = PoolKey(str(stage), "model"), finite_or_none(last.get(stage))
        upto, cur, new = finite_or_none(covered.get(stage)), inp.current.get(pool), out.desired.get(pool)
        grows = cur is not None and new is not None and new.replicas * new.gpus > cur.replicas * cur.gpus
        passed = upto is not None and (
            inp.load.arrival_rate_rps > upto + noise or recent_floor(inp.load) > upto
        )
        short = str(pool) in upsized and new != cur  # the replicas in force cannot hold the KV
        outrun = scale_up_in_slot and ((passed and grows) or short)
        if (
            steady
            and was.get(stage) == "model"
            and stage not in switched
            and t is not None
            and t <= inp.now_s
            and _slot(t, interval_s) == _slot(inp.now_s, interval_s)
            and _in_bounds(inp, pool)
            and not outrun
        ):
            desired[pool], raw[pool] = inp.current[pool], inp.current[pool].replicas
            kept.append(pool)
            stamps[stage] = t
            if upto is not None:
                cover[stage] = upto
            nxt = (_slot(t, interval_s) + 1) * interval_s
            said.append(
                f"{stage}: keeps {inp.current[pool].replicas} whole-model replica(s) until t={nxt:g} s "
                f"(whole-model stages are re-planned every {interval_s:g} s, as the model-level policy does)."
            )
        else:
            stamps[stage] = inp.now_s
            if planned is not None:
                cover[stage] = planned
            if outrun and short:
                said.append(
                    f"{stage}: changes its replicas' size inside its {interval_s:g} s slot: those in force "
                    "cannot hold the KV the plan sizes for."
                )
            elif outrun and upto is not None:
                said.append(
                    f"{stage}: scales up inside its {interval_s:g} s slot: the load "
                    f"({inp.load.arrival_rate_rps:.3g} req/s) has passed the {upto:.3g} req/s the slot's "
                    "plan was made for."
                )
    data["held"] = stamps
    data["covered"] = cover
    if any(out.desired[p].replicas != desired[p].replicas for p in kept):
        # this tick's prediction is for counts not in force: the one of the counts in force stands
        data.pop("predicted", None)
        if "predicted" in before:
            data["predicted"] = before["predicted"]
    stab = _restore(out.state.stabilizer, inp.state.stabilizer, set(kept)) if kept else out.state.stabilizer
    # the stabilizer's steps on a held pool were not taken: neither its effects nor their sentences stand
    dropped = {e.reason for e in out.effects if e.pool in kept}
    return replace(
        out,
        desired=desired,
        raw=raw,
        effects=tuple(e for e in out.effects if e.pool not in kept),
        reasons=[*said, *(r for r in out.reasons if r not in dropped)],
        state=replace(out.state, stabilizer=stab, data=data),
    )
