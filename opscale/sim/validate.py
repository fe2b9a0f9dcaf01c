"""Model validation: for a steady Poisson load, the planners' predicted TTFT/TBT percentiles against the
percentiles the simulation measures when that very plan is held fixed (a static policy with the plan's
pools, batch sizes and GPUs per replica).

The error is (predicted − measured) / measured. Positive: the queueing model is conservative (it
over-provisions); negative: optimistic (it would miss the SLO).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from opscale.model import get_preset, perf_model
from opscale.policy.model_level import plan_model
from opscale.policy.operator import plan_operator
from opscale.policy.types import SLO, LoadWindow
from opscale.sim.experiment import weighted_quantile
from opscale.sim.run import simulate
from opscale.sim.traces import Trace
from opscale.spec import parse_spec


@dataclass(frozen=True, slots=True)
class ValidationRow:
    model: str
    planner: str
    rate_rps: float
    input_tokens: int
    output_tokens: int
    gpus: int
    predicted_ttft_p99_ms: float
    measured_ttft_p99_ms: float
    predicted_tbt_p99_ms: float
    measured_tbt_p99_ms: float

    @property
    def ttft_error(self) -> float:
        return (self.predicted_ttft_p99_ms - self.measured_ttft_p99_ms) / self.measured_ttft_p99_ms

    @property
    def tbt_error(self) -> float:
        return (self.predicted_tbt_p99_ms - self.measured_tbt_p99_ms) / self.measured_tbt_p99_ms

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ttft_error": self.ttft_error, "tbt_error": self.tbt_error}


def poisson_trace(rate: float, seconds: float, inp: int, out: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * seconds * 1.3) + 50))
    t = t[t < seconds]
    n = len(t)
    return Trace(f"poisson-{rate:g}", t, np.full(n, inp, dtype=np.int64), np.full(n, out, dtype=np.int64))


DEFAULT_SLO = SLO(2000, 100)


def validate_point(
    model: str,
    planner: str,
    rate: float,
    inp: int,
    out: int,
    *,
    slo: SLO = DEFAULT_SLO,
    seconds: float = 300.0,
    warmup_s: float = 60.0,
    seed: int = 0,
) -> ValidationRow:
    perf = perf_model(get_preset(model), "H100")
    lw = LoadWindow(window_s=60, arrival_rate_rps=rate, input_tokens_mean=inp, output_tokens_mean=out)
    plan = (plan_operator if planner == "operator" else plan_model)(perf, lw, slo)
    spec = parse_spec(
        {
            "name": "validate",
            "model": {"preset": model},
            "policy": "static",
            "slo": {"ttft_ms": slo.ttft_ms, "tbt_ms": slo.tbt_ms},
            "static_params": {
                "pools": [
                    {
                        "pool": {"stage": k.stage, "operator": k.operator},
                        "replicas": v.replicas,
                        "gpus_per_replica": v.gpus_per_replica,
                        "batch_size": v.batch_size or 64,
                    }
                    for k, v in plan.pools.items()
                ]
            },
        }
    )
    trace = poisson_trace(rate, seconds, inp, out, seed)
    res = simulate(spec, trace, plan.pools)
    req = res.requests
    steady = (req.arrival_s >= warmup_s) & ~np.isnan(req.ttft_s)
    ttft = float(np.percentile(req.ttft_s[steady], 99)) * 1e3
    # Token gaps after the warm-up: the TBT histogram entries are stamped per second in order.
    tbt = weighted_quantile(res.tbt_ms, res.tbt_count.astype(np.float64), 0.99)
    return ValidationRow(
        model,
        planner,
        rate,
        inp,
        out,
        plan.prediction.gpus or 0,
        plan.prediction.ttft_ms or float("nan"),
        ttft,
        plan.prediction.tbt_ms or float("nan"),
        tbt,
    )


def validation_table(rows: list[ValidationRow]) -> str:
    out = [
        "| model | planner | req/s | in/out tokens | GPUs | TTFT p99 predicted | measured | error | "
        "TBT p99 predicted | measured | error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.model} | {r.planner} | {r.rate_rps:g} | {r.input_tokens}/{r.output_tokens} | "
            f"{r.gpus} | {r.predicted_ttft_p99_ms:.0f} | {r.measured_ttft_p99_ms:.0f} | "
            f"{100 * r.ttft_error:+.0f}% | {r.predicted_tbt_p99_ms:.1f} | "
            f"{r.measured_tbt_p99_ms:.1f} | {100 * r.tbt_error:+.0f}% |"
        )
    return "\n".join(out)


def run_validation(
    models: tuple[str, ...] = ("llama3-70b", "mixtral-8x7b"),
    rates: tuple[float, ...] = (2.0, 8.0, 20.0),
    inp: int = 1024,
    out: int = 256,
    seconds: float = 300.0,
) -> list[ValidationRow]:
    return [
        validate_point(m, p, r, inp, out, seconds=seconds)
        for m in models
        for p in ("model", "operator")
        for r in rates
    ]
