"""One decision as the service sees it (``DecisionView``) and its layout in the ledger's JSON columns.

Layout of a ``decisions`` row (the one place it is spelled):

- ``inputs``: ``load`` (every ``LoadWindow`` field), ``current`` (the plan in force, per pool),
  ``frozen``, ``interval_s``, ``slo`` — with the spec version and the state, enough to replay the tick.
- ``outputs``: ``desired`` and ``draining`` per pool, ``raw`` (the policy before the stabilizer),
  ``infeasible``, ``state`` (``PolicyState.to_json``: what the next tick continues from) and
  ``placement`` (``outcome``, ``message``; PENDING until placement answered).
- ``predicted``: ``ttft_ms``, ``tbt_ms``, ``gpus``, ``watts``, ``percentile``.
- ``stabilizer``: ``effects``: every change a stabilizer step made, in order: ``pool``, ``rule``,
  ``before``, ``after``, ``reason`` (``StabilizerEffect``, as the stabilizer returned it).

``encode`` writes a record, ``decode`` reads one, ``view_of`` is ``decode(encode(...))`` without the
JSON round trip: the one codec of this layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opscale.actuation import Outcome
from opscale.db.records import DecisionRecord
from opscale.policy.types import (
    InfeasibilityKind,
    LoadWindow,
    PolicyInput,
    PolicyOutput,
    PolicyState,
    PoolKey,
    PoolPlan,
    Rule,
    StabilizerEffect,
)
from opscale.signals.load import load_from_json, load_to_json


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
    effects: Sequence[StabilizerEffect]
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


def _effect_json(e: StabilizerEffect) -> dict[str, Any]:
    return {
        "pool": str(e.pool),
        "rule": e.rule.value,
        "before": e.before,
        "after": e.after,
        "reason": e.reason,
    }


def _effect(data: Mapping[str, Any]) -> StabilizerEffect:
    if "before" not in data:  # recorded before effects were typed: the rule was guessed from the counts
        rule = Rule(data["rule"]) if data["rule"] in Rule.__members__.values() else Rule.UNSPECIFIED
        pool = PoolKey.parse(data["pool"])
        return StabilizerEffect(pool, rule, int(data["raw"]), int(data["stabilized"]), "")
    return StabilizerEffect(
        PoolKey.parse(data["pool"]),
        Rule(data["rule"]),
        int(data["before"]),
        int(data["after"]),
        str(data["reason"]),
    )


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
        stabilizer={"effects": [_effect_json(e) for e in out.effects]},
        leader_id=leader_id,
    )


def _plans_from(data: Mapping[str, Any]) -> dict[PoolKey, PoolPlan]:
    return {PoolKey.parse(k): PoolPlan.from_json(v) for k, v in data.items()}


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _predicted(data: Mapping[str, Any]) -> Predicted:
    return Predicted(
        ttft_ms=_opt(data.get("ttft_ms")),
        tbt_ms=_opt(data.get("tbt_ms")),
        gpus=_opt(data.get("gpus")),
        watts=_opt(data.get("watts")),
        percentile=float(data.get("percentile", 99.0)),
    )


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
        effects=[_effect(e) for e in record.stabilizer.get("effects", [])],
        infeasible=infeasible,
        predicted=_predicted(predicted),
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
        effects=list(out.effects),
        infeasible=infeasible,
        predicted=_predicted(predicted),
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
