"""Decisions, explanations and what-if plans -> ``opscale.api.decision.v1``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.decisions.explain import Explanation
from opscale.decisions.record import DecisionView, Infeasible, Predicted
from opscale.policy.types import Infeasibility, Prediction
from opscale.policy.whatif import WhatIfResult
from opscale.signals.load import max_staleness
from opscale.wire.enums import OUTCOME
from opscale.wire.pools import num, plans_to_pb, pool_to_pb


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
        ttft_ms_p99=num(load.ttft_p99_ms),
        tbt_ms_p99=num(load.tbt_p99_ms),
        gpu_utilization_fraction=num(load.gpu_utilization),
        # A signal never seen is infinitely stale; the wire has no infinity for it, so -1.
        max_staleness_s=-1.0 if oldest is None else oldest,
        stale=view.stale,
    )


def decision_to_pb(view: DecisionView) -> pb.Decision:
    return pb.Decision(
        id=str(view.id),
        deployment=view.deployment,
        spec_version=view.spec_version,
        tick_ms=round(view.tick_at.timestamp() * 1000),
        policy=view.policy,
        policy_version=view.policy_version,
        pools=plans_to_pb(view.desired, view.draining),
        previous_pools=plans_to_pb(view.current),
        prediction=prediction_to_pb(view.predicted, view.predicted.percentile),
        reasons=list(view.reasons),
        stabilizer_effects=[
            pb.StabilizerEffect(
                pool=pool_to_pb(e.pool),
                raw_replicas=e.before,
                stabilized_replicas=e.after,
                rule=e.rule.value,
                reason=e.reason,
            )
            for e in view.effects
        ],
        infeasible=infeasible_to_pb(view.infeasible),
        load=load_to_pb(view),
        leader_id=view.leader_id,
        placement_outcome=OUTCOME.to_pb(view.placement),  # type: ignore[arg-type]
        placement_message=view.placement_message,
        frozen=view.frozen,
    )


def explanation_to_pb(explanation: Explanation) -> pb.ExplainDecisionResponse:
    return pb.ExplainDecisionResponse(
        decision=decision_to_pb(explanation.decision),
        estimates=[
            pb.PoolEstimate(
                pool=pool_to_pb(e.pool),
                arrival_rate_per_s=e.arrival_rate_per_s,
                latency_ms=num(e.latency_ms),
                utilization=num(e.utilization),
            )
            for e in explanation.estimates
        ],
        narrative=explanation.narrative,
    )


def whatif_to_pb(results: Sequence[WhatIfResult]) -> list[pb.WhatIfPlan]:
    return [
        pb.WhatIfPlan(
            policy_name=r.policy,
            pools=plans_to_pb(r.pools),
            prediction=prediction_to_pb(r.prediction, r.slo.percentile),
            reasons=list(r.reasons),
            infeasible=infeasible_to_pb(r.infeasible),
        )
        for r in results
    ]


def prediction_to_pb(p: Prediction | Predicted | None, percentile: float) -> cpb.Prediction:
    """A policy's ``Prediction`` or a recorded one (``Predicted``); absent numbers are 0 on the wire."""
    if p is None:
        return cpb.Prediction(percentile=percentile)
    return cpb.Prediction(
        ttft_ms=num(p.ttft_ms),
        tbt_ms=num(p.tbt_ms),
        gpus=num(p.gpus),
        watts=num(p.watts),
        percentile=percentile,
    )


def infeasible_to_pb(items: Iterable[Infeasibility | Infeasible]) -> list[cpb.Infeasibility]:
    """A policy's infeasibilities or recorded ones (whose ``kind`` is already a string)."""
    return [
        cpb.Infeasibility(
            pool=pool_to_pb(i.pool) if i.pool is not None else None,
            reason=f"{i.kind}: {i.message}",
            requested=max(0, i.needed or 0),
            satisfiable=max(0, i.allowed or 0),
        )
        for i in items
    ]
