"""Operator vs model on the demo's own load, with the code ``opscale evaluate`` runs.

The live replay runs one policy (operator) against the real services; to compare, both policies are
also run through ``opscale.sim.experiment.run_one`` — the function behind every row of
``opscale evaluate`` — on the same window of the same trace at the same speed-up (``scenario``), in
child processes while the live replay goes on. The live view shows both runs' GPUs second by second;
the report shows their metrics and one sentence that says where the difference comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opscale.sim.experiment import RunMetrics, Scenario, run_one

POLICIES = ("operator", "model")


def scenario(trace: str, model: str, speedup: float, start_s: float, duration_s: float) -> Scenario:
    """The demo's replay as an evaluate scenario: the trace compressed ``speedup``×, the window
    [start_s, start_s + duration_s) of it (what ``run_demo`` replays), the demo's SLO."""
    return Scenario(trace, model, 2000.0, 100.0, speedup=speedup, start_s=start_s, duration_s=duration_s)


@dataclass(frozen=True, slots=True)
class PolicyRun:
    metrics: RunMetrics
    gpus: tuple[int, ...]  # GPUs allocated at the end of each second
    mean_replicas: dict[str, float]  # per pool that ever ran a replica


def run_policy(sc: Scenario, policy: str) -> PolicyRun:
    m, res = run_one(sc, policy)
    return PolicyRun(
        metrics=m,
        gpus=tuple(int(g) for g in res.gpus),
        mean_replicas={k: float(np.mean(v)) for k, v in sorted(res.replicas.items()) if v.any()},
    )


@dataclass(frozen=True, slots=True)
class SideBySide:
    operator: PolicyRun
    model: PolicyRun

    def gpus_at(self, t_s: float) -> tuple[int | None, int | None]:
        """(operator, model) GPUs at second ``t_s`` of the replay."""
        i = int(t_s) - 1

        def at(run: PolicyRun) -> int | None:
            return run.gpus[i] if 0 <= i < len(run.gpus) else None

        return at(self.operator), at(self.model)

    def sentence(self) -> str:
        """The difference in one sentence, from the two runs' numbers."""
        op, ml = self.operator.metrics, self.model.metrics
        d = op.gpu_hours / ml.gpu_hours - 1.0 if ml.gpu_hours else float("nan")
        verb = "fewer" if d < 0 else "more"
        pools = "; ".join(
            f"{name} ran {', '.join(f'{k} {v:.1f}' for k, v in run.mean_replicas.items())}"
            for name, run in (("operator-level", self.operator), ("model-level", self.model))
        )
        return (
            f"On the same load operator-level used {abs(100 * d):.0f}% {verb} GPU-hours than model-level "
            f"({op.mean_gpus:.1f} vs {ml.mean_gpus:.1f} GPUs on average, "
            f"{100 * op.slo_attainment:.1f}% vs {100 * ml.slo_attainment:.1f}% of requests within the SLO) "
            f"because of how each sized its pools (mean replicas: {pools})."
        )
