"""Decisions, explanations and what-if plans -> protos.

(Kept apart from ``convert.py``, which holds the spec conversions and is being edited by others right
now; both are the service's "convert" role.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.errors import InvalidArgument
from opscale.policy.whatif import WhatIfResult
from opscale.signals.load import max_staleness
from opscale.spec import PolicyKind
from services.decision.convert import POLICY_FROM_PB, POLICY_TO_PB
from services.decision.explain import Explanation
from services.decision.placement_client import Outcome
from services.decision.pools import plans_to_pb, pool_key_to_pb
from services.decision.record import DecisionView

OUTCOME_TO_PB = {
    Outcome.PENDING: pb.PLACEMENT_OUTCOME_PENDING,
    Outcome.APPLIED: pb.PLACEMENT_OUTCOME_APPLIED,
    Outcome.PARTIAL: pb.PLACEMENT_OUTCOME_PARTIAL,
    Outcome.FAILED: pb.PLACEMENT_OUTCOME_FAILED,
    Outcome.NOT_NEEDED: pb.PLACEMENT_OUTCOME_NOT_NEEDED,
}


def _num(value: float | None) -> float:
    return 0.0 if value is None or not math.isfinite(value) else value


def load_to_pb(view: DecisionView) -> pb.LoadSnapshot:
    load = view.load
    oldest = max_staleness(load)
    return pb.LoadSnapshot(
        window_s=load.window_s,
        arrivals_per_s=load.arrival_rate_rps,
        input_tokens_mean=load.input_tokens_mean,
        output_tokens_mean=load.output_tokens_mean,
        decode_tokens_per_s=load.decode_tps,
        prefill_tokens_per_s=load.prefill_uncached_tps,
        ttft_ms_p99=_num(load.ttft_p99_ms),
        tbt_ms_p99=_num(load.tbt_p99_ms),
        gpu_utilization_fraction=_num(load.gpu_utilization),
        # A signal never seen is infinitely stale; the wire has no infinity for it, so -1.
        max_staleness_s=-1.0 if oldest is None else oldest,
        stale=view.stale,
    )


def decision_to_pb(view: DecisionView) -> pb.Decision:
    p = view.predicted
    return pb.Decision(
        id=str(view.id),
        deployment=view.deployment,
        spec_version=view.spec_version,
        tick_ms=round(view.tick_at.timestamp() * 1000),
        policy=view.policy,
        policy_version=view.policy_version,
        pools=plans_to_pb(view.desired, view.draining),
        previous_pools=plans_to_pb(view.current),
        prediction=cpb.Prediction(
            ttft_ms=_num(p.ttft_ms),
            tbt_ms=_num(p.tbt_ms),
            gpus=_num(p.gpus),
            watts=_num(p.watts),
            percentile=p.percentile,
        ),
        reasons=list(view.reasons),
        stabilizer_effects=[
            pb.StabilizerEffect(
                pool=pool_key_to_pb(e.pool),
                raw_replicas=e.raw_replicas,
                stabilized_replicas=e.stabilized_replicas,
                rule=e.rule,
                reason=e.reason,
            )
            for e in view.effects
        ],
        infeasible=[
            cpb.Infeasibility(
                pool=pool_key_to_pb(i.pool) if i.pool is not None else None,
                reason=f"{i.kind}: {i.message}",
                requested=max(0, i.needed or 0),
                satisfiable=max(0, i.allowed or 0),
            )
            for i in view.infeasible
        ],
        load=load_to_pb(view),
        leader_id=view.leader_id,
        placement_outcome=OUTCOME_TO_PB[view.placement],
        placement_message=view.placement_message,
        frozen=view.frozen,
    )


def explanation_to_pb(explanation: Explanation) -> pb.ExplainDecisionResponse:
    return pb.ExplainDecisionResponse(
        decision=decision_to_pb(explanation.decision),
        estimates=[
            pb.PoolEstimate(
                pool=pool_key_to_pb(e.pool),
                arrival_rate_per_s=e.arrival_rate_per_s,
                latency_ms=_num(e.latency_ms),
                utilization=_num(e.utilization),
            )
            for e in explanation.estimates
        ],
        narrative=explanation.narrative,
    )


def policy_from_pb(value: int, field: str) -> PolicyKind:
    table: dict[int, PolicyKind] = {int(k): v for k, v in POLICY_FROM_PB.items()}
    if value not in table:
        allowed = ", ".join(pb.PolicyKind.Name(v) for v in table)
        raise InvalidArgument(f"{field}: policy {value} is not one of {allowed}", field=field)
    return table[value]


def _policy_to_pb(name: str) -> pb.PolicyKind:
    known: dict[str, pb.PolicyKind] = {k.value: v for k, v in POLICY_TO_PB.items()}
    return known.get(name, pb.POLICY_KIND_UNSPECIFIED)


def whatif_to_pb(results: Sequence[WhatIfResult]) -> list[pb.WhatIfPlan]:
    plans = []
    for r in results:
        p = r.prediction
        plans.append(
            pb.WhatIfPlan(
                policy=_policy_to_pb(r.policy),
                pools=plans_to_pb(r.pools),
                prediction=cpb.Prediction(
                    ttft_ms=_num(p.ttft_ms if p else None),
                    tbt_ms=_num(p.tbt_ms if p else None),
                    gpus=_num(p.gpus if p else None),
                    watts=_num(p.watts if p else None),
                    percentile=r.slo.percentile,
                ),
                reasons=list(r.reasons),
                infeasible=[
                    cpb.Infeasibility(
                        pool=pool_key_to_pb(i.pool) if i.pool is not None else None,
                        reason=f"{i.kind.value}: {i.message}",
                        requested=max(0, i.needed or 0),
                        satisfiable=max(0, i.allowed or 0),
                    )
                    for i in r.infeasible
                ],
            )
        )
    return plans
