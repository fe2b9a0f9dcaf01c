"""Why a decision is what it is: per-pool estimates and a plain-language narrative, one line per step
(inputs → model estimates → policy reasons → stabilizer effects → placement). Pure: a ``DecisionView``
in, an ``Explanation`` out; everything it says was recorded with the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from opscale.actuation import Outcome
from opscale.decisions.record import DecisionView
from opscale.policy.types import PoolKey
from opscale.signals.load import max_staleness


@dataclass(frozen=True, slots=True)
class PoolEstimate:
    pool: PoolKey
    arrival_rate_per_s: float
    latency_ms: float | None  # the pool's predicted latency at the SLO percentile, if the policy predicts
    utilization: float | None  # busy fraction observed in the window, if reported


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: DecisionView
    estimates: list[PoolEstimate]
    narrative: list[str]


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _inputs(v: DecisionView) -> list[str]:
    load = v.load
    lines = [
        f"Inputs: over the last {load.window_s:g} s, {load.arrival_rate_rps:,.2f} requests/s with "
        f"{load.input_tokens_mean:,.0f} input and {load.output_tokens_mean:,.0f} output tokens on average; "
        f"decode {load.decode_tps:,.0f} tokens/s, prefill {load.prefill_uncached_tps:,.0f} tokens/s; "
        f"observed TTFT p99 {_ms(load.ttft_p99_ms)}, TBT p99 {_ms(load.tbt_p99_ms)}."
    ]
    if load.recent_arrivals is not None and load.recent_s > 0:
        lines.append(
            f"Inputs: the last {load.recent_s:g} s of the window held {load.recent_arrivals:,} requests "
            f"({load.recent_arrivals / load.recent_s:,.2f}/s)."
        )
    missing = sorted(str(s) for s, age in load.staleness_s.items() if age is None)
    oldest = max_staleness(load)
    if missing:
        lines.append(f"Inputs: never reported (or expired): {', '.join(missing)}.")
    elif oldest is not None:
        lines.append(f"Inputs: the oldest signal was {oldest:.1f} s old.")
    return lines


def decided_gpus(v: DecisionView) -> float:
    """GPUs the decided counts occupy (a replica on a share of one GPU counts as that share)."""
    return sum(p.replicas * p.gpus_per_replica * p.gpu_share for p in v.desired.values())


def _model(v: DecisionView) -> str:
    p = v.predicted
    decided = decided_gpus(v)
    # The prediction is for the policy's plan; the stabilizer may have held other counts.
    other = p.gpus is not None and abs(p.gpus - decided) > 1e-6
    held = f" (the policy's plan; {decided:g} GPUs are decided)" if other else ""
    if p.ttft_ms is None and p.tbt_ms is None:
        gpus = "" if p.gpus is None else f" The plan occupies {p.gpus:g} GPUs{held}."
        return f"Model: the {v.policy} policy makes no latency prediction.{gpus}"
    watts = "" if p.watts is None else f", drawing about {p.watts:,.0f} W"
    gpus = "" if p.gpus is None else f" on {p.gpus:g} GPUs"
    return (
        f"Model: predicted at p{p.percentile:g}: TTFT {_ms(p.ttft_ms)}, TBT {_ms(p.tbt_ms)}{gpus}{watts}"
        f"{held}."
    )


def _plan(v: DecisionView) -> str:
    parts = []
    for pool, plan in sorted(v.desired.items()):
        before = v.current.get(pool)
        was = "new" if before is None else f"was {before.replicas}"
        drain = v.draining.get(pool, 0)
        extra = f", {drain} draining" if drain else ""
        parts.append(f"{pool} {plan.replicas} ({was}{extra})")
    return "Decision: " + ("; ".join(parts) if parts else "no pools") + "."


def _placement(v: DecisionView) -> str:
    if v.placement == Outcome.NOT_NEEDED:
        return f"Placement: nothing to hand over ({v.placement_message or 'no change'})."
    if v.placement == Outcome.PENDING:
        return "Placement: handed over; no answer recorded yet."
    return f"Placement: {v.placement.value.upper()}: {v.placement_message}"


def explain(v: DecisionView) -> Explanation:
    narrative = _inputs(v)
    narrative.append(_model(v))
    narrative.append(f"Policy: {v.policy} v{v.policy_version} (spec version {v.spec_version}).")
    narrative += [f"Policy: {r}" for r in v.reasons]
    if v.frozen:
        narrative.append("Stabilizer: the deployment is frozen: current counts are held.")
    if v.effects:
        narrative += [
            f"Stabilizer: {e.pool} {e.before} -> {e.after} ({e.rule.value}): {e.reason}" for e in v.effects
        ]
    else:
        narrative.append("Stabilizer: the policy's recommendation stands unchanged.")
    narrative += [f"Infeasible: {i.message}" for i in v.infeasible]
    narrative.append(_plan(v))
    narrative.append(_placement(v))
    estimates = [
        PoolEstimate(
            pool=pool,
            arrival_rate_per_s=v.load.arrival_rate_rps,
            latency_ms=plan.predicted_latency_ms,
            utilization=v.load.busy_fraction.get(pool),
        )
        for pool, plan in sorted(v.desired.items())
    ]
    return Explanation(v, estimates, narrative)
