"""Scenarios: a trace, a model, an SLO and a policy → a ``DeploymentSpec`` built through ``opscale.spec``,
the plan in force at t=0, the perfect-knowledge lower bound, and the metrics of one run.

Fairness rules, the same for every policy of a scenario:

* one fleet ceiling: whole-model pools may grow to 2× the static (peak) plan's replicas, operator pools
  to the spec default (64 replicas each); every policy starts from its own planner's plan for the first
  minute's load (static: its peak plan; utilization and pd: the model-level plan), replicas ready;
* baselines get their own published defaults: utilization's 300 s scale-down window and 15 s sync,
  pd's 60 s / 300 s cooldowns, the model policy's 20 s interval, operator 1 s;
* pd's target decode tokens/s per instance is 70% of a model-level decode replica's throughput at the
  batch the model planner picks for the mean load (HeteroScale profiles it offline at the SLO); its P/D
  ratio is that plan's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from opscale.model import PerfModel, get_preset, perf_model
from opscale.policy.model_level import plan_model
from opscale.policy.operator import plan_operator
from opscale.policy.planner_core import pass_ms
from opscale.policy.types import SLO, LoadWindow, PoolKey, PoolPlan
from opscale.sim.engine import SimConfig
from opscale.sim.run import SimResult, simulate
from opscale.sim.traces import Trace, load_trace, scale_rate, scale_time
from opscale.spec import DeploymentSpec, parse_spec

POLICIES = ("static", "utilization", "model", "operator", "pd")


@dataclass(frozen=True, slots=True)
class Scenario:
    trace: str  # packaged name or a file
    model: str = "llama3-70b"
    ttft_ms: float = 2000.0
    tbt_ms: float = 100.0
    rate_scale: float = 1.0
    speedup: float = 1.0  # replay time compression (request traces); ServeGen: window compression
    start_s: float = 0.0
    duration_s: float | None = None  # of the (compressed) replay
    gpu_type: str = "H100"
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.trace} {self.model} TTFT≤{self.ttft_ms:g}ms TBT≤{self.tbt_ms:g}ms"


def build_trace(sc: Scenario) -> Trace:
    rng = np.random.default_rng(sc.seed)
    if sc.trace.startswith("servegen"):
        # 600 s windows replayed in 600/speedup s each; rate scaled at generation.
        dur = None if sc.duration_s is None else sc.duration_s * sc.speedup
        t = load_trace(
            sc.trace,
            rng=rng,
            start_s=sc.start_s,
            duration_s=dur or 86400.0,
            rate_scale=sc.rate_scale,
            window_s=600.0 / sc.speedup,
        )
        return t
    t = load_trace(sc.trace)
    if sc.speedup != 1.0:
        t = scale_time(t, sc.speedup)
    if sc.start_s or sc.duration_s is not None:
        t = t.window(sc.start_s, sc.start_s + (sc.duration_s or math.inf))
    if sc.rate_scale != 1.0:
        t = scale_rate(t, sc.rate_scale, rng)
    return t


def window_of(trace: Trace, start_s: float, end_s: float) -> LoadWindow:
    """What a perfect observer would report for [start_s, end_s)."""
    m = (trace.arrival_s >= start_s) & (trace.arrival_s < end_s)
    span = max(end_s - start_s, 1e-9)
    if not m.any():
        return LoadWindow(window_s=span)
    i, o = trace.input_tokens[m], trace.output_tokens[m]
    return LoadWindow(
        window_s=span,
        arrival_rate_rps=float(m.sum()) / span,
        input_tokens_mean=float(i.mean()),
        input_tokens_p99=float(np.percentile(i, 99)),
        output_tokens_mean=float(o.mean()),
        output_tokens_p99=float(np.percentile(o, 99)),
        decode_tps=float(m.sum()) / span * float(o.mean()),
    )


def lower_bound(
    perf: PerfModel,
    trace: Trace,
    slo: SLO,
    horizon_s: float,
    interval_s: float = 60.0,
) -> tuple[float, np.ndarray]:
    """GPU-hours of the fewest GPUs the performance model allows per interval, knowing each interval's
    load exactly and paying no start-up: min over the operator and model planners' plans. Its
    lengths are the whole trace's means (per-interval means of a few requests are noise)."""
    n = math.ceil(horizon_s / interval_s)
    gpus = np.zeros(n)
    i_mean = float(trace.input_tokens.mean())
    o_mean = float(trace.output_tokens.mean())
    counts = np.bincount((trace.arrival_s // interval_s).astype(np.int64), minlength=n)[:n]
    cache: dict[int, float] = {}
    for k in range(n):
        c = int(counts[k])
        if c not in cache:
            lw = LoadWindow(
                window_s=interval_s,
                arrival_rate_rps=c / interval_s,
                input_tokens_mean=i_mean,
                output_tokens_mean=o_mean,
            )
            cache[c] = min(
                plan_operator(perf, lw, slo).prediction.gpus or 0,
                plan_model(perf, lw, slo).prediction.gpus or 0,
            )
        gpus[k] = cache[c]
    span = np.minimum(interval_s, horizon_s - np.arange(n) * interval_s)  # the last interval may be short
    return float((gpus * span).sum() / 3600.0), gpus


def peak_window(trace: Trace, width_s: float = 60.0) -> LoadWindow:
    counts = np.bincount((trace.arrival_s // width_s).astype(np.int64))
    k = int(np.argmax(counts))
    w = window_of(trace, 0.0, trace.duration_s + 1.0)
    return LoadWindow(
        window_s=width_s,
        arrival_rate_rps=counts[k] / width_s,
        input_tokens_mean=w.input_tokens_mean,
        output_tokens_mean=w.output_tokens_mean,
    )


def _pool(p: str) -> dict[str, str]:
    stage, _, op = p.partition("/")
    return {"stage": stage, "operator": op}


def build(sc: Scenario, policy: str, trace: Trace) -> tuple[DeploymentSpec, dict[PoolKey, PoolPlan]]:
    """The spec for ``policy`` on this scenario and the plan in force at t=0."""
    perf = perf_model(get_preset(sc.model), sc.gpu_type)
    slo = SLO(sc.ttft_ms, sc.tbt_ms)
    first = window_of(trace, 0.0, 60.0)
    whole = window_of(trace, 0.0, trace.duration_s + 1.0)
    first = LoadWindow(
        window_s=60.0,
        arrival_rate_rps=first.arrival_rate_rps,
        input_tokens_mean=whole.input_tokens_mean,
        output_tokens_mean=whole.output_tokens_mean,
    )
    peak = plan_model(perf, peak_window(trace), slo).pools
    cap = {k: max(4, 2 * v.replicas) for k, v in peak.items()}
    base: dict[str, Any] = {
        "name": f"sim-{policy}",
        "model": {"preset": sc.model},
        "gpu_type": sc.gpu_type,
        "mode": "disaggregated",
        "policy": policy,
        "slo": {"ttft_ms": sc.ttft_ms, "tbt_ms": sc.tbt_ms, "percentile": 99.0},
    }
    if policy != "operator":
        base["limits"] = [{"pool": _pool(str(k)), "min_replicas": 1, "max_replicas": cap[k]} for k in peak]
    else:
        base["limits"] = [{"min_replicas": 1, "max_replicas": 64}]
    if policy == "operator":
        initial = plan_operator(perf, first, slo).pools
        base["operator_params"] = {"floor_fraction": 0.0}
    elif policy == "static":
        initial = dict(peak)
        base["static_params"] = {
            "pools": [
                {
                    "pool": _pool(str(k)),
                    "replicas": v.replicas,
                    "gpus_per_replica": v.gpus_per_replica,
                    "batch_size": v.batch_size or 64,
                }
                for k, v in peak.items()
            ]
        }
    else:
        initial = plan_model(perf, first, slo).pools
    if policy == "utilization":
        base["utilization_params"] = {"target_utilization": 0.6}
        base["stabilization"] = {
            "scale_down_window_s": 300.0,
            "scale_down_cooldown_s": 0.0,
            "max_staleness_s": 60.0,
        }
    elif policy == "pd":
        mean = plan_model(perf, whole, slo)
        d, p = mean.pools[PoolKey("decode", "model")], mean.pools[PoolKey("prefill", "model")]
        from opscale.policy.model_level import whole_model_unit

        length = max(1, round(whole.input_tokens_mean + whole.output_tokens_mean / 2))
        b = d.batch_size or 64
        tps = b / (pass_ms(perf, whole_model_unit(perf, "decode"), b, length, d.gpus_per_replica) / 1e3)
        base["pd_params"] = {
            "target_decode_tokens_per_s_per_instance": round(0.7 * tps, 1),
            "prefill_per_decode": min(16.0, max(0.0625, p.replicas / d.replicas)),
        }
        base["stabilization"] = {
            "scale_up_cooldown_s": 60.0,
            "scale_down_cooldown_s": 300.0,
            "scale_down_window_s": 60.0,
            "max_staleness_s": 30.0,
        }
    elif policy == "model":
        pass
    return parse_spec(base), dict(initial)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    scenario: str
    trace: str
    model: str
    policy: str
    ttft_slo_ms: float
    tbt_slo_ms: float
    requests: int
    gpu_hours: float
    mean_gpus: float
    peak_gpus: int
    energy_kwh_released: float
    energy_kwh_idle: float
    slo_attainment: float
    ttft_p99_ms: float
    tbt_p99_ms: float
    rejected: int
    unfinished: int
    actions: int
    decisions: int
    lower_bound_gpu_hours: float
    ratio_to_lower_bound: float
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    if len(values) == 0 or weights.sum() == 0:
        return float("nan")
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    return float(v[min(len(v) - 1, int(np.searchsorted(cum, q * cum[-1], side="left")))])


def metrics(sc: Scenario, res: SimResult, lb_gpu_hours: float, wall_s: float) -> RunMetrics:
    req = res.requests
    n = len(req.arrival_s)
    served = ~np.isnan(req.finish_s)
    tpot = np.where(req.tbt_n > 0, req.tbt_sum_s / np.maximum(req.tbt_n, 1), 0.0)
    ok = served & (req.ttft_s * 1e3 <= sc.ttft_ms) & (tpot * 1e3 <= sc.tbt_ms)
    ttft = req.ttft_s[~np.isnan(req.ttft_s)] * 1e3
    gpu_h = float(res.gpus.sum()) / 3600.0
    peak = int(res.gpus.max()) if len(res.gpus) else 0
    released = float(res.watts.sum()) / 3.6e6
    idle = released + float(((peak - res.gpus) * res.idle_watts_per_gpu).sum()) / 3.6e6
    return RunMetrics(
        scenario=sc.label,
        trace=sc.trace,
        model=sc.model,
        policy=res.policy,
        ttft_slo_ms=sc.ttft_ms,
        tbt_slo_ms=sc.tbt_ms,
        requests=n,
        gpu_hours=gpu_h,
        mean_gpus=float(res.gpus.mean()) if len(res.gpus) else 0.0,
        peak_gpus=peak,
        energy_kwh_released=released,
        energy_kwh_idle=idle,
        slo_attainment=float(ok.sum()) / max(n, 1),
        ttft_p99_ms=float(np.percentile(ttft, 99)) if len(ttft) else float("nan"),
        tbt_p99_ms=weighted_quantile(res.tbt_ms, res.tbt_count.astype(np.float64), 0.99),
        rejected=int(req.rejected.sum()),
        unfinished=int((~served & ~req.rejected).sum()),
        actions=res.actions,
        decisions=res.decisions,
        lower_bound_gpu_hours=lb_gpu_hours,
        ratio_to_lower_bound=gpu_h / lb_gpu_hours if lb_gpu_hours > 0 else float("nan"),
        wall_s=wall_s,
    )


def run_one(
    sc: Scenario,
    policy: str,
    *,
    config: SimConfig | None = None,
    trace: Trace | None = None,
    lb: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[RunMetrics, SimResult]:
    import time

    trace = trace if trace is not None else build_trace(sc)
    spec, initial = build(sc, policy, trace)
    t0 = time.perf_counter()
    res = simulate(spec, trace, initial, config=config, progress=progress)
    wall = time.perf_counter() - t0
    if lb is None:
        perf = perf_model(get_preset(sc.model), sc.gpu_type)
        lb, _ = lower_bound(perf, trace, SLO(sc.ttft_ms, sc.tbt_ms), res.horizon_s)
    return metrics(sc, res, lb, wall), res


def summary_row(m: RunMetrics) -> Mapping[str, Any]:
    return m.to_json()
