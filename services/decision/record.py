"""One decision as the service sees it (``DecisionView``) and its layout in the ledger's JSON columns.

Layout of a ``decisions`` row (the one place it is spelled):

- ``inputs``: ``load`` (every ``LoadWindow`` field), ``current`` (the plan in force, per pool),
  ``frozen``, ``interval_s``, ``slo`` — with the spec version and the state, enough to replay the tick.
- ``outputs``: ``desired`` and ``draining`` per pool, ``raw`` (the policy before the stabilizer),
  ``infeasible``, ``state`` (``PolicyState.to_json``: what the next tick continues from) and
  ``placement`` (``outcome``, ``message``; PENDING until placement answered).
- ``predicted``: ``ttft_ms``, ``tbt_ms``, ``gpus``, ``watts``, ``percentile``.
- ``stabilizer``: ``effects``: what the stabilizer changed, per pool, with its rule and reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opscale.db.records import DecisionRecord
from opscale.policy.types import (
    InfeasibilityKind,
    LoadWindow,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolPlan,
)
from opscale.signals.load import load_from_json, load_to_json
from services.decision.placement_client import Outcome


@dataclass(frozen=True, slots=True)
class Effect:
    pool: PoolKey
    raw_replicas: int
    stabilized_replicas: int
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class Infeasible:
    kind: str
    message: str
    pool: PoolKey | None = None
    needed: int | None = None
    allowed: int | None = None


@dataclass(frozen=True, slots=True)
class Predicted:
    ttft_ms: float | None = None
    tbt_ms: float | None = None
    gpus: float | None = None
    watts: float | None = None
    percentile: float = 99.0


@dataclass(frozen=True, slots=True)
class DecisionView:
    id: int
    deployment: str
    spec_version: int
    tick_at: datetime
    policy: str
    policy_version: str
    leader_id: str
    load: LoadWindow
    current: Mapping[PoolKey, PoolPlan]
    desired: Mapping[PoolKey, PoolPlan]
    draining: Mapping[PoolKey, int]
    raw: Mapping[PoolKey, int]
    reasons: Sequence[str]
    effects: Sequence[Effect]
    infeasible: Sequence[Infeasible]
    predicted: Predicted
    state: PolicyState
    frozen: bool
    placement: Outcome
    placement_message: str
    interval_s: float = 0.0
    stale: bool = field(default=False)


def _plans(plans: Mapping[PoolKey, PoolPlan]) -> dict[str, Any]:
    return {str(k): dict(v.to_json()) for k, v in sorted(plans.items())}


def _counts(counts: Mapping[PoolKey, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counts.items())}


def _rule(pool: PoolKey, inp: PolicyInput, out: PolicyOutput, n: int) -> str:
    if inp.frozen:
        return "frozen"
    if any(i.kind == InfeasibilityKind.STALE_SIGNALS for i in out.infeasible):
        return "fail_static"
    bounds = inp.limits.for_pool(pool)
    if n == bounds.min_replicas:
        return "min"
    if bounds.max_replicas is not None and n == bounds.max_replicas:
        return "max"
    return "stabilizer"


def effects_of(inp: PolicyInput, out: PolicyOutput) -> list[Effect]:
    """Pools whose stabilized count differs from the policy's raw one; the reason is the last sentence
    that names the pool (the stabilizer's reasons follow the policy's)."""
    found = []
    for pool, raw in sorted(out.raw.items()):
        plan = out.desired.get(pool)
        if plan is None or plan.replicas == raw:
            continue
        reason = next((r for r in reversed(out.reasons) if str(pool) in r), "")
        found.append(Effect(pool, raw, plan.replicas, _rule(pool, inp, out, plan.replicas), reason))
    return found


def encode(
    *,
    deployment: str,
    spec_version: int,
    tick_at: datetime,
    policy: str,
    policy_version: str,
    leader_id: str,
    inp: PolicyInput,
    out: PolicyOutput,
    interval_s: float,
    placement: Outcome,
    placement_message: str = "",
) -> DecisionRecord:
    pred = out.predicted
    gpus = sum(p.replicas * p.gpus_per_replica for p in out.desired.values())
    watts = [p.watts for p in out.desired.values() if p.watts is not None]
    return DecisionRecord(
        deployment=deployment,
        spec_version=spec_version,
        tick_at=tick_at,
        policy=policy,
        policy_version=policy_version,
        inputs={
            "load": load_to_json(inp.load),
            "current": _plans(inp.current),
            "frozen": inp.frozen,
            "interval_s": interval_s,
            "slo": {"ttft_ms": inp.slo.ttft_ms, "tbt_ms": inp.slo.tbt_ms, "percentile": inp.slo.percentile},
        },
        outputs={
            "desired": _plans(out.desired),
            "draining": _counts(out.draining),
            "raw": _counts(out.raw),
            "infeasible": [
                {
                    "kind": i.kind.value,
                    "message": i.message,
                    "pool": str(i.pool) if i.pool else None,
                    "needed": i.needed,
                    "allowed": i.allowed,
                }
                for i in out.infeasible
            ],
            "state": dict(out.state.to_json()),
            "placement": {"outcome": placement.value, "message": placement_message},
        },
        reasons=list(out.reasons),
        predicted={
            "ttft_ms": pred.ttft_ms if pred else None,
            "tbt_ms": pred.tbt_ms if pred else None,
            # The policy's own GPU count if it predicts one; else what the plan occupies.
            "gpus": pred.gpus if pred and pred.gpus is not None else gpus,
            "watts": pred.watts if pred and pred.watts is not None else (sum(watts) if watts else None),
            "percentile": inp.slo.percentile,
        },
        stabilizer={
            "effects": [
                {
                    "pool": str(e.pool),
                    "raw": e.raw_replicas,
                    "stabilized": e.stabilized_replicas,
                    "rule": e.rule,
                    "reason": e.reason,
                }
                for e in effects_of(inp, out)
            ]
        },
        leader_id=leader_id,
    )


def _plans_from(data: Mapping[str, Any]) -> dict[PoolKey, PoolPlan]:
    return {PoolKey.parse(k): PoolPlan.from_json(v) for k, v in data.items()}


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def decode(record: DecisionRecord) -> DecisionView:
    if record.id is None:
        raise ValueError("a decision is viewed only once the ledger stored it")
    inputs, outputs, predicted = record.inputs, record.outputs, record.predicted
    infeasible = [
        Infeasible(
            kind=str(i["kind"]),
            message=str(i["message"]),
            pool=PoolKey.parse(i["pool"]) if i.get("pool") else None,
            needed=i.get("needed"),
            allowed=i.get("allowed"),
        )
        for i in outputs.get("infeasible", [])
    ]
    placement = outputs.get("placement", {})
    return DecisionView(
        id=record.id,
        deployment=record.deployment,
        spec_version=record.spec_version,
        tick_at=record.tick_at,
        policy=record.policy,
        policy_version=record.policy_version,
        leader_id=record.leader_id,
        load=load_from_json(inputs["load"]),
        current=_plans_from(inputs.get("current", {})),
        desired=_plans_from(outputs.get("desired", {})),
        draining={PoolKey.parse(k): int(v) for k, v in outputs.get("draining", {}).items()},
        raw={PoolKey.parse(k): int(v) for k, v in outputs.get("raw", {}).items()},
        reasons=list(record.reasons),
        effects=[
            Effect(
                PoolKey.parse(e["pool"]),
                int(e["raw"]),
                int(e["stabilized"]),
                str(e["rule"]),
                str(e["reason"]),
            )
            for e in record.stabilizer.get("effects", [])
        ],
        infeasible=infeasible,
        predicted=Predicted(
            ttft_ms=_opt(predicted.get("ttft_ms")),
            tbt_ms=_opt(predicted.get("tbt_ms")),
            gpus=_opt(predicted.get("gpus")),
            watts=_opt(predicted.get("watts")),
            percentile=float(predicted.get("percentile", 99.0)),
        ),
        state=PolicyState.from_json(outputs.get("state", {})),
        frozen=bool(inputs.get("frozen", False)),
        placement=Outcome(placement.get("outcome", Outcome.PENDING.value)),
        placement_message=str(placement.get("message", "")),
        interval_s=float(inputs.get("interval_s", 0.0)),
        stale=any(i.kind == InfeasibilityKind.STALE_SIGNALS.value for i in infeasible),
    )


def view_of(record: DecisionRecord, inp: PolicyInput, out: PolicyOutput) -> DecisionView:
    """``decode(record)`` for a record just made from ``inp``/``out`` by ``encode``, without parsing its
    JSON back (the loop makes a thousand of these a tick; a unit test checks the two agree)."""
    if record.id is None:
        raise ValueError("a decision is viewed only once the ledger stored it")
    infeasible = [
        Infeasible(kind=i.kind.value, message=i.message, pool=i.pool, needed=i.needed, allowed=i.allowed)
        for i in out.infeasible
    ]
    predicted, placement = record.predicted, record.outputs["placement"]
    return DecisionView(
        id=record.id,
        deployment=record.deployment,
        spec_version=record.spec_version,
        tick_at=record.tick_at,
        policy=record.policy,
        policy_version=record.policy_version,
        leader_id=record.leader_id,
        load=inp.load,
        current=dict(inp.current),
        desired=dict(out.desired),
        draining=dict(out.draining),
        raw=dict(out.raw),
        reasons=list(out.reasons),
        effects=[
            Effect(PoolKey.parse(e["pool"]), e["raw"], e["stabilized"], e["rule"], e["reason"])
            for e in record.stabilizer["effects"]
        ],
        infeasible=infeasible,
        predicted=Predicted(
            ttft_ms=_opt(predicted["ttft_ms"]),
            tbt_ms=_opt(predicted["tbt_ms"]),
            gpus=_opt(predicted["gpus"]),
            watts=_opt(predicted["watts"]),
            percentile=float(predicted["percentile"]),
        ),
        state=out.state,
        frozen=inp.frozen,
        placement=Outcome(placement["outcome"]),
        placement_message=str(placement["message"]),
        interval_s=float(record.inputs["interval_s"]),
        stale=any(i.kind == InfeasibilityKind.STALE_SIGNALS for i in out.infeasible),
    )


def with_placement(record: DecisionRecord, outcome: Outcome, message: str) -> DecisionRecord:
    outputs = dict(record.outputs)
    outputs["placement"] = {"outcome": outcome.value, "message": message}
    return DecisionRecord(
        deployment=record.deployment,
        spec_version=record.spec_version,
        tick_at=record.tick_at,
        policy=record.policy,
        policy_version=record.policy_version,
        inputs=record.inputs,
        outputs=outputs,
        reasons=record.reasons,
        predicted=record.predicted,
        stabilizer=record.stabilizer,
        leader_id=record.leader_id,
        id=record.id,
    )
