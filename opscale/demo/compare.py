"""Operator vs model on the demo's own load, with the code ``opscale evaluate`` runs.

The live replay runs one policy (operator) against the real services; to compare, both policies are
also run through ``opscale.sim.experiment.run_one`` — the function behind every row of
``opscale evaluate`` — on the same window of the same trace at the same speed-up (``scenario``), in
child processes while the live replay goes on. The live view shows both runs' GPUs second by second;
the report shows their metrics and one sentence that says where the difference comes from.

Two policies rarely attain the same share of requests, and GPU-hours at different attainment do not
compare. So the model policy also runs at evaluate's headroom sweep (``SWEEP``: its cost curve, each
run ~1 s) and both are read at equal attainment with evaluate's ``opscale.sim.attainment.compare``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from opscale.sim.attainment import Comparison, Point, compare
from opscale.sim.difference import breakdown
from opscale.sim.difference import sentence as difference
from opscale.sim.evaluate import SWEEP
from opscale.sim.experiment import RunMetrics, Scenario, run_one

# (policy, headroom) of every simulated run: the operator policy at its defaults, the model policy at
# evaluate's sweep (its default first).
JOBS: tuple[tuple[str, float], ...] = (("operator", 0.0), *(("model", h) for h in sorted(SWEEP)))


def scenario(trace: str, model: str, speedup: float, start_s: float, duration_s: float) -> Scenario:
    """The demo's replay as an evaluate scenario: the trace compressed ``speedup``×, the window
    [start_s, start_s + duration_s) of it (what ``run_demo`` replays), the demo's SLO."""
    return Scenario(trace, model, 2000.0, 100.0, speedup=speedup, start_s=start_s, duration_s=duration_s)


@dataclass(frozen=True, slots=True)
class PolicyRun:
    metrics: RunMetrics
    gpus: tuple[int, ...]  # GPUs allocated at the end of each second
    mean_replicas: dict[str, float]  # per pool that ever ran a replica
    breakdown: dict[str, Any]  # where its GPUs and energy went (opscale.sim.difference)


def run_policy(sc: Scenario, policy: str, headroom: float = 0.0) -> PolicyRun:
    m, res = run_one(sc, policy, headroom=headroom)
    return PolicyRun(
        metrics=m,
        gpus=tuple(int(g) for g in res.gpus),
        mean_replicas={k: float(np.mean(v)) for k, v in sorted(res.replicas.items()) if v.any()},
        breakdown=breakdown(res),
    )


@dataclass(frozen=True, slots=True)
class SideBySide:
    operator: PolicyRun
    model: PolicyRun  # at its defaults
    model_sweep: tuple[PolicyRun, ...] = ()  # at the sweep's other headrooms

    def equal(self) -> Comparison | None:
        """Operator vs model read at equal attainment (None without the model's sweep)."""
        if not self.model_sweep:
            return None
        points = {
            name: [
                Point(m.headroom, m.slo_attainment, m.gpu_hours, m.energy_kwh_released)
                for m in (r.metrics for r in runs)
            ]
            for name, runs in (
                ("operator-level", (self.operator,)),
                ("model-level", (self.model, *self.model_sweep)),
            )
        }
        return compare(points, "operator-level", "model-level")

    def gpus_at(self, t_s: float, model: PolicyRun | None = None) -> tuple[int | None, int | None]:
        """(operator, model) GPUs at second ``t_s`` of the replay; ``model``: that model-level run (its
        default run unless given)."""
        i = int(t_s) - 1

        def at(run: PolicyRun) -> int | None:
            return run.gpus[i] if 0 <= i < len(run.gpus) else None

        return at(self.operator), at(model if model is not None else self.model)

    def matched(self) -> PolicyRun:
        """The model-level run to set beside operator-level's: the fewest GPU-hours among those that
        attain at least operator-level's share of requests in SLO (GPUs at lower attainment do not
        compare), or the one that attains most where none does."""
        runs = (self.model, *self.model_sweep)
        level = self.operator.metrics.slo_attainment
        enough = [r for r in runs if r.metrics.slo_attainment >= level]
        if enough:
            return min(enough, key=lambda r: r.metrics.gpu_hours)
        return max(runs, key=lambda r: (r.metrics.slo_attainment, -r.metrics.gpu_hours))

    def sentence(self) -> str:
        """The difference in one sentence, from the two runs' numbers."""
        op, ml = self.operator.metrics, self.model.metrics
        d = op.gpu_hours / ml.gpu_hours - 1.0 if ml.gpu_hours else float("nan")
        verb = "fewer" if d < 0 else "more"
        pools = "; ".join(
            f"{name} ran {', '.join(f'{k} {v:.1f}' for k, v in run.mean_replicas.items())}"
            for name, run in (("operator-level", self.operator), ("model-level", self.model))
        )
        text = (
            f"On the same load operator-level used {abs(100 * d):.0f}% {verb} GPU-hours than model-level "
            f"({100 * op.slo_attainment:.1f}% vs {100 * ml.slo_attainment:.1f}% of requests within the SLO) "
            f"because of how each sized its pools (mean replicas: {pools})."
        )
        text += " " + difference(op.to_json(), self.operator.breakdown, ml.to_json(), self.model.breakdown)
        eq = self.equal()
        if eq is not None:
            text += (
                f" With model-level's headroom swept ({', '.join(f'{h:g}' for h in sorted(SWEEP))}), "
                + eq.sentence("operator-level", "model-level")
            )
        return text
