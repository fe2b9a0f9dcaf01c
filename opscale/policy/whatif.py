"""What-if: "what should the fleet look like at this load?", per policy, side by side.

Each named policy decides once at a steady load — a ``LoadWindow`` whose every signal is fresh, with
the decode and prefill token rates the request rate and lengths imply — from an empty state and an
empty current plan, through a stabilizer that keeps the spec's replica bounds but drops windows,
cooldowns and step limits, so the first plan is not held back. Policies that react to observed
latency or utilization (pd's safety net, utilization) see none; the HPA-style policy therefore does not
scale from zero, as the real one would not.

GPUs: whole GPUs per replica, and replicas that the operator planner gave a share of one GPU
(``opscale.model.sharing``) packed onto shared GPUs, as placement places them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from opscale.errors import InvalidArgument
from opscale.policy.spec_adapter import setup_for
from opscale.policy.types import (
    SLO,
    Infeasibility,
    InfeasibilityKind,
    LoadWindow,
    PolicyInput,
    PoolKey,
    PoolPlan,
    Prediction,
    Signal,
    plan_gpus,
)
from opscale.spec import DeploymentSpec, PolicyKind

_UNLIMITED_STEP = 1 << 30


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    policy: str
    slo: SLO
    pools: Mapping[PoolKey, PoolPlan]
    prediction: Prediction | None
    reasons: list[str]
    infeasible: list[Infeasibility]

    @property
    def gpus(self) -> int:
        return plan_gpus(self.pools.values())


def steady_load(requests_per_s: float, input_tokens: float, output_tokens: float) -> LoadWindow:
    return LoadWindow(
        window_s=60.0,
        arrival_rate_rps=requests_per_s,
        input_tokens_mean=input_tokens,
        input_tokens_p99=input_tokens,
        output_tokens_mean=output_tokens,
        output_tokens_p99=output_tokens,
        decode_tps=requests_per_s * output_tokens,
        prefill_uncached_tps=requests_per_s * input_tokens,
        staleness_s={s: 0.0 for s in Signal},
    )


def what_if(
    spec: DeploymentSpec,
    requests_per_s: float,
    input_tokens: float,
    output_tokens: float,
    policies: Sequence[PolicyKind] | None = None,
) -> list[WhatIfResult]:
    """One result per policy, in order; ``None`` means the spec's policy, then ``operator`` and
    ``model`` if not already named. A policy the spec cannot configure (pd or static without their
    parameters) comes back with an ``Infeasibility`` instead of a plan."""
    kinds = (
        list(policies)
        if policies is not None
        else list(dict.fromkeys([spec.policy, PolicyKind.OPERATOR, PolicyKind.MODEL]))
    )
    load = steady_load(requests_per_s, input_tokens, output_tokens)
    out: list[WhatIfResult] = []
    for kind in kinds:
        try:
            setup = setup_for(spec, kind)
        except InvalidArgument as exc:
            why = Infeasibility(InfeasibilityKind.MISSING_INPUT, f"{kind.value}: {exc.message}")
            out.append(
                WhatIfResult(
                    kind.value,
                    SLO(spec.slo.ttft_ms, spec.slo.tbt_ms, spec.slo.percentile),
                    {},
                    None,
                    [why.message],
                    [why],
                )
            )
            continue
        limits = replace(
            setup.limits,
            max_step_abs=_UNLIMITED_STEP,
            max_step_frac=None,
            scale_up_window_s=0.0,
            scale_down_window_s=0.0,
            scale_up_cooldown_s=0.0,
            scale_down_cooldown_s=0.0,
        )
        res = setup.policy.decide(
            PolicyInput(now_s=0.0, deployment=spec.name, load=load, current={}, slo=setup.slo, limits=limits)
        )
        out.append(
            WhatIfResult(
                kind.value,
                setup.slo,
                dict(res.desired),
                res.predicted,
                list(res.reasons),
                list(res.infeasible),
            )
        )
    return out


def _fmt(x: float | int | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pool_cell(p: PoolPlan | None) -> str:
    if p is None:
        return "-"
    batch = f" b{p.batch_size}" if p.batch_size is not None else ""
    return f"{p.replicas}x{p.gpus:g}GPU{batch}"


def format_side_by_side(results: Sequence[WhatIfResult]) -> str:
    """A plain-text table: one column per policy — GPUs, predicted TTFT/TBT at the SLO percentile,
    watts, then each pool's replicas × GPUs and batch — followed by every policy's reasons."""
    if not results:
        return "(no policies)"
    tag = f"p{results[0].slo.percentile:g}"
    rows: list[tuple[str, list[str]]] = [
        ("GPUs", [str(r.gpus) for r in results]),
        (
            f"TTFT {tag} ms (SLO {results[0].slo.ttft_ms:g})",
            [_fmt(r.prediction.ttft_ms if r.prediction else None) for r in results],
        ),
        (
            f"TBT {tag} ms (SLO {results[0].slo.tbt_ms:g})",
            [_fmt(r.prediction.tbt_ms if r.prediction else None) for r in results],
        ),
        ("watts", [_fmt(r.prediction.watts if r.prediction else None, 0) for r in results]),
        ("infeasible", ["yes" if r.infeasible else "no" for r in results]),
    ]
    for pool in sorted({p for r in results for p in r.pools}):
        rows.append((str(pool), [_pool_cell(r.pools.get(pool)) for r in results]))
    w0 = max(len(name) for name, _ in rows)
    widths = [max(len(r.policy), *(len(cells[i]) for _, cells in rows)) for i, r in enumerate(results)]
    lines = ["  ".join([" " * w0, *(r.policy.rjust(w) for r, w in zip(results, widths, strict=True))])]
    for name, cells in rows:
        lines.append("  ".join([name.ljust(w0), *(c.rjust(w) for c, w in zip(cells, widths, strict=True))]))
    for r in results:
        lines.append("")
        lines.append(f"{r.policy}:")
        lines.extend(f"  - {reason}" for reason in r.reasons)
        lines.extend(f"  ! {i.kind.value}: {i.message}" for i in r.infeasible)
    return "\n".join(lines)
