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
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from opscale.errors import InvalidArgument
from opscale.model import get_preset, perf_model
from opscale.policy.model_level import plan_model
from opscale.policy.operator import plan_hybrid
from opscale.policy.planner_core import pass_ms
from opscale.policy.types import SLO, LoadWindow, PoolKey, PoolPlan
from opscale.sim.engine import SimConfig
from opscale.sim.fixed import Steady, unservable
from opscale.sim.mixes import get_mix, register_pairs
from opscale.sim.observe import peak_window, window_of
from opscale.sim.oracle import LAYOUTS, oracle
from opscale.sim.run import SimResult, simulate
from opscale.sim.traces import MAX_REPLAY_S, Trace, load_trace, scale_rate, scale_time, servegen_files
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
    start_s: float = 0.0  # of the (compressed) replay; ServeGen: from the first window starting there
    duration_s: float | None = None  # of the (compressed) replay
    gpu_type: str = "H100"
    seed: int = 0
    # A length mix (opscale.sim.mixes) that re-draws every request's (prompt, output) pair, keeping the
    # trace's arrivals: e.g. "longtail" turns a conversation trace into a long-prompt one.
    lengths: str | None = None

    def __post_init__(self) -> None:
        for name in ("rate_scale", "speedup"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"{name} must be a finite number > 0, got {value}", field=name)
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise InvalidArgument(
                f"start_s must be a finite number >= 0, got {self.start_s}", field="start_s"
            )
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise InvalidArgument(
                f"duration_s must be a finite number > 0, got {self.duration_s}", field="duration_s"
            )
        if self.seed < 0:
            raise InvalidArgument(f"seed must be >= 0, got {self.seed}", field="seed")

    @property
    def label(self) -> str:
        lengths = f" lengths={self.lengths}" if self.lengths else ""
        return f"{self.trace}{lengths} {self.model} TTFT≤{self.ttft_ms:g}ms TBT≤{self.tbt_ms:g}ms"


SERVEGEN_WINDOW_S = 600.0  # a ServeGen rate file's window, replayed in SERVEGEN_WINDOW_S / speedup


def build_trace(sc: Scenario) -> Trace:
    t = _arrivals(sc)
    if not len(t):
        everything = _arrivals(replace(sc, start_s=0.0, duration_s=None))
        if not len(everything):
            raise InvalidArgument(f"trace {sc.trace!r} holds no requests", field="trace")
        end = f" to {sc.start_s + sc.duration_s:g} s" if sc.duration_s else " on"
        span = f"{sc.start_s:g} s{end}"
        whole = everything.duration_s
        windows = ""
        if servegen_files(sc.trace) is not None:
            play = SERVEGEN_WINDOW_S / sc.speedup
            windows = f"; a ServeGen replay takes whole {play:g} s windows that start in the span"
        raise InvalidArgument(
            f"start_s/duration_s: no request of {sc.trace!r} arrives {span} of its replay "
            f"(at speedup {sc.speedup:g} its last request arrives at {whole:.0f} s{windows})",
            field="start_s",
        )
    if t.duration_s > MAX_REPLAY_S:
        raise InvalidArgument(
            f"trace {sc.trace!r}: its replay spans {t.duration_s:.3g} s, over the simulator's "
            f"{MAX_REPLAY_S:,.0f} s (7 days; it keeps per-second series): replay a part with duration_s "
            "(timestamps in a JSONL trace are milliseconds)",
            field="duration_s",
        )
    if sc.lengths is None:
        return t
    # Its own stream (seed, 1), so the arrivals are the same with and without re-drawn lengths.
    inputs, outputs = get_mix(sc.lengths)(len(t), np.random.default_rng((sc.seed, 1)))
    note = f"{t.note}; lengths re-drawn from the {sc.lengths!r} mix".lstrip("; ")
    return Trace(f"{t.name}+{sc.lengths}", t.arrival_s, inputs, outputs, note)


def _arrivals(sc: Scenario) -> Trace:
    rng = np.random.default_rng(sc.seed)
    if servegen_files(sc.trace) is not None:
        # 600 s windows replayed in 600/speedup s each; rate scaled at generation.
        # start and duration are of the replay, as for request traces: the file's seconds are ×speedup
        dur = None if sc.duration_s is None else sc.duration_s * sc.speedup
        t = load_trace(
            sc.trace,
            rng=rng,
            start_s=sc.start_s * sc.speedup,
            duration_s=dur or 86400.0,
            rate_scale=sc.rate_scale,
            window_s=SERVEGEN_WINDOW_S / sc.speedup,
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


LB_INTERVAL_S = 60.0
LB_STEP = 1.1  # load levels of the lower bound: minute rates rounded to a 10% geometric grid


def trace_mix(sc: Scenario, trace: Trace) -> str:
    """Register (in this process) the mix that draws the scenario trace's own (prompt, output) pairs."""
    return register_pairs(f"trace:{sc.label}:{sc.seed}", trace.input_tokens, trace.output_tokens)


def load_levels(trace: Trace, horizon_s: float, interval_s: float = LB_INTERVAL_S) -> np.ndarray:
    """Per interval, its arrival rate rounded to the ``LB_STEP`` grid (0 for an empty interval)."""
    n = math.ceil(horizon_s / interval_s)
    counts = np.bincount((trace.arrival_s // interval_s).astype(np.int64), minlength=n)[:n]
    rates = counts / interval_s
    out = np.zeros(n)
    busy = rates > 0
    out[busy] = LB_STEP ** np.round(np.log(rates[busy]) / math.log(LB_STEP))
    return out


def level_load(sc: Scenario, mix: str, level: float) -> Steady:
    """The steady load the oracle is searched at for one level: the level's rate with the trace's lengths,
    long enough for ~2,000 requests."""
    return Steady(
        sc.model,
        float(level),
        mix,
        sc.ttft_ms,
        sc.tbt_ms,
        sc.gpu_type,
        seconds=max(120.0, 2000.0 / level + 30.0),
        warmup_s=30.0,
    )


def oracle_gpus(sc: Scenario, trace: Trace, level: float) -> float:
    """Fewest GPUs of either layout that meet the SLO at ``level`` (one seed: a lower bound's estimate)."""
    mix = trace_mix(sc, trace)
    best = math.inf
    for layout in LAYOUTS:
        res = oracle(level_load(sc, mix, level), layout, seeds=(sc.seed,))
        if res.feasible:
            best = min(best, res.gpus)
    return best


def lower_bound(levels: np.ndarray, gpus_at: Mapping[float, float], horizon_s: float) -> float:
    """GPU-hours of the oracle's GPUs per interval: each interval's load held steady, met exactly, no
    start-up paid — what no autoscaler meeting the SLO can go below on that load."""
    n = len(levels)
    gpus = np.array([gpus_at.get(float(lv), 0.0) if lv > 0 else 0.0 for lv in levels])
    span = np.minimum(LB_INTERVAL_S, horizon_s - np.arange(n) * LB_INTERVAL_S)
    return float((gpus * span).sum() / 3600.0)


def _pool(p: str) -> dict[str, str]:
    stage, _, op = p.partition("/")
    return {"stage": stage, "operator": op}


# Policies whose planner takes a ``headroom`` (plan for load × (1 + headroom)): the knob the
# equal-attainment comparison sweeps (opscale.sim.attainment).
HEADROOM_POLICIES = ("model", "operator")


def build(
    sc: Scenario, policy: str, trace: Trace, headroom: float = 0.0, forecast: bool = True
) -> tuple[DeploymentSpec, dict[PoolKey, PoolPlan]]:
    """The spec for ``policy`` on this scenario and the plan in force at t=0 (``headroom``: the
    planner's, for ``HEADROOM_POLICIES``; ``forecast``: the operator policy's forecast over start-up, on
    by default; the initial plan is the same whatever they are)."""
    if headroom and policy not in HEADROOM_POLICIES:
        raise InvalidArgument(
            f"headroom applies to the {' and '.join(HEADROOM_POLICIES)} policies, not {policy!r}",
            field="headroom",
        )
    if not forecast and policy != "operator":
        raise InvalidArgument(f"only the operator policy forecasts, not {policy!r}", field="forecast")
    perf = perf_model(get_preset(sc.model), sc.gpu_type)
    slo = SLO(sc.ttft_ms, sc.tbt_ms)
    first = window_of(trace, 0.0, 60.0)
    whole = window_of(trace, 0.0, trace.duration_s + 1.0)
    first = LoadWindow(
        window_s=60.0,
        arrival_rate_rps=first.arrival_rate_rps,
        input_tokens_mean=whole.input_tokens_mean,
        output_tokens_mean=whole.output_tokens_mean,
        input_tokens_dist=whole.input_tokens_dist,
        output_tokens_dist=whole.output_tokens_dist,
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
        # min 0: the stage form the hybrid does not run keeps no replica (opscale.policy.hybrid).
        base["limits"] = [{"min_replicas": 0, "max_replicas": 64}]
    if policy == "operator":
        initial = plan_hybrid(perf, first, slo).pools
        base["operator_params"] = {"floor_fraction": 0.0, "headroom": headroom, "forecast": forecast}
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
        from opscale.policy.hybrid import whole_model_unit

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
    elif policy == "model" and headroom:
        base["model_params"] = {"headroom": headroom}
    return parse_spec(base), dict(initial)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    scenario: str
    trace: str
    model: str
    policy: str
    headroom: float  # the planner's headroom knob (0: the policy's default)
    forecast: bool | None  # the operator policy's forecast over start-up (None: a policy without one)
    estimated: bool  # the model's operators are priced from an estimated profile (opscale.model.estimate)
    ttft_slo_ms: float
    tbt_slo_ms: float
    requests: int
    unservable: int  # no configuration serves them within the SLO: counted here, not in attainment
    gpu_hours: float
    mean_gpus: float
    peak_gpus: int
    energy_kwh_released: float
    energy_kwh_idle: float
    slo_attainment: float  # of the servable requests
    ttft_p99_ms: float
    tbt_p99_ms: float  # per-request TBT (mean gap between a request's tokens, the second's wait included)
    ttst_p99_ms: float  # time from the first token to the second (a wait for KV memory shows here)
    token_gap_p99_ms: float  # over every token gap (hides a stall before the second token)
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


def metrics(
    sc: Scenario,
    res: SimResult,
    lb_gpu_hours: float,
    wall_s: float,
    headroom: float = 0.0,
    forecast: bool | None = None,
) -> RunMetrics:
    req = res.requests
    n = len(req.arrival_s)
    perf = perf_model(get_preset(sc.model), sc.gpu_type)
    bad = unservable(perf, req.input_tokens, req.output_tokens, SLO(sc.ttft_ms, sc.tbt_ms))
    served = ~np.isnan(req.finish_s)
    tpot = np.where(req.tbt_n > 0, req.tbt_sum_s / np.maximum(req.tbt_n, 1), 0.0)
    ok = served & (req.ttft_s * 1e3 <= sc.ttft_ms) & (tpot * 1e3 <= sc.tbt_ms) & ~bad
    ttft = req.ttft_s[~np.isnan(req.ttft_s) & ~bad] * 1e3
    decoded = (req.tbt_n > 0) & ~bad
    gpu_h = float(res.gpus.sum()) / 3600.0
    peak = int(res.gpus.max()) if len(res.gpus) else 0
    released = float(res.watts.sum()) / 3.6e6
    idle = released + float(((peak - res.gpus) * res.idle_watts_per_gpu).sum()) / 3.6e6
    return RunMetrics(
        scenario=sc.label,
        trace=sc.trace,
        model=sc.model,
        policy=res.policy,
        headroom=headroom,
        forecast=forecast,
        estimated=perf.estimated,
        ttft_slo_ms=sc.ttft_ms,
        tbt_slo_ms=sc.tbt_ms,
        requests=n,
        unservable=int(bad.sum()),
        gpu_hours=gpu_h,
        mean_gpus=float(res.gpus.mean()) if len(res.gpus) else 0.0,
        peak_gpus=peak,
        energy_kwh_released=released,
        energy_kwh_idle=idle,
        slo_attainment=float(ok.sum()) / max(n - int(bad.sum()), 1),
        ttft_p99_ms=_p99(ttft),
        tbt_p99_ms=_p99(tpot[decoded] * 1e3),
        ttst_p99_ms=_p99(req.ttst_s[decoded] * 1e3),
        token_gap_p99_ms=weighted_quantile(res.tbt_ms, res.tbt_count.astype(np.float64), 0.99),
        rejected=int(req.rejected.sum()),
        unfinished=int((~served & ~req.rejected).sum()),
        actions=res.actions,
        decisions=res.decisions,
        lower_bound_gpu_hours=lb_gpu_hours,
        ratio_to_lower_bound=gpu_h / lb_gpu_hours if lb_gpu_hours > 0 else float("nan"),
        wall_s=wall_s,
    )


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99)) if len(values) else float("nan")


def run_one(
    sc: Scenario,
    policy: str,
    *,
    config: SimConfig | None = None,
    trace: Trace | None = None,
    lb: float | None = None,
    progress: Callable[[float], None] | None = None,
    headroom: float = 0.0,
    forecast: bool = True,
) -> tuple[RunMetrics, SimResult]:
    import time

    trace = trace if trace is not None else build_trace(sc)
    spec, initial = build(sc, policy, trace, headroom, forecast)
    t0 = time.perf_counter()
    res = simulate(spec, trace, initial, config=config, progress=progress)
    wall = time.perf_counter() - t0
    fc = forecast if policy == "operator" else None
    return metrics(sc, res, math.nan if lb is None else lb, wall, headroom, fc), res


def oracle_bound(sc: Scenario, trace: Trace, horizon_s: float) -> float:
    """``lower_bound`` with the oracle searched at every load level of the trace (in this process)."""
    levels = load_levels(trace, horizon_s)
    gpus = {float(lv): oracle_gpus(sc, trace, float(lv)) for lv in np.unique(levels[levels > 0])}
    return lower_bound(levels, gpus, horizon_s)


def summary_row(m: RunMetrics) -> Mapping[str, Any]:
    return m.to_json()
