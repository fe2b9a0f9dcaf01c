"""What the planners add to one window's load: a forecast over the time new replicas take to start, and a
closed-loop correction of their own latency model from what was observed.

**Forecast.** Capacity the planner asks for now serves requests from when it is ready: after a replica's
start-up, ``horizon_s``. So the planner sizes for the load expected over that horizon, not the window's
mean: the arrival rates of the last ``HISTORY_S`` seconds of ticks (kept in the policy's state) give a
trend (least-squares slope, only upward: a falling load is met by the scale-in window) and the spread
of the rate around it (σ of the residuals, which includes the window's Poisson noise); the plan is for

    λ_plan = λ_now + max(0, slope) · horizon_s + Z · σ

never below λ_now. The horizon is the start-up of the largest replica the plan in force runs, from the
weights it loads (``opscale.model.startup``, the simulator's start-up model); a measured start-up (the
policy's ``startup_s`` parameter) replaces the estimate.

**Correction** (as NVIDIA Dynamo's planner corrects its interpolated latency with the observed one). Per
stage, the ratio of the observed p99 (TTFT for prefill, TBT for decode) to the p99 the planner predicted
for the plan in force feeds an exponentially weighted factor c, bounded to [``C_MIN``, ``C_MAX``]; the
stage is then planned against SLO / c: a model that under-predicts by 20% plans to a budget 20% tighter.
A ratio is only taken when the plan's replica counts have been in force for a window plus a start-up (so
the window observed that plan alone, its replicas ready), the window saw the latency, and the load
moved less than ``STEADY`` since the prediction (otherwise the two describe different loads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from opscale.model import PerfModel
from opscale.model.memory import usable_bytes
from opscale.model.startup import startup_s
from opscale.policy.jsonval import JSONValue
from opscale.policy.types import SLO, LoadWindow, PoolKey, PoolPlan, Prediction

HISTORY_S = 120.0
Z = 1.645  # one-sided 95% headroom on the rate's spread
C_MIN, C_MAX = 0.85, 2.0
ALPHA = 0.3  # weight of the newest ratio
STEADY = 0.2  # the load may differ by at most 20% between prediction and observation


def horizon_s(perf: PerfModel, current: Mapping[PoolKey, PoolPlan]) -> float:
    """Start-up of the largest replica the plan in force runs (a whole-model replica on the fewest GPUs
    that hold it when nothing runs yet)."""
    every = tuple(sorted({spec.kind.value for st in ("prefill", "decode") for spec in perf.operators(st)}))
    best = 0.0
    for pool, plan in current.items():
        if plan.replicas:
            ops = every if pool.operator == "model" else (pool.operator,)
            weights = sum(perf.weights_bytes(op) for op in ops)
            best = max(best, startup_s(perf.gpu.key, weights, plan.gpus))
    if best == 0.0:
        weights = sum(perf.weights_bytes(op) for op in every)
        best = startup_s(perf.gpu.key, weights, math.ceil(weights / usable_bytes(perf.gpu.memory_bytes)))
    return best


@dataclass(frozen=True, slots=True)
class Forecast:
    rate_rps: float
    slope_rps_per_s: float
    sigma_rps: float
    horizon_s: float

    def sentence(self, now_rps: float) -> str:
        return (
            f"forecast: planned for {self.rate_rps:.3g} req/s over the next {self.horizon_s:.0f} s of "
            f"replica start-up (now {now_rps:.3g}, trend {self.slope_rps_per_s:+.3g} req/s², spread σ "
            f"{self.sigma_rps:.2g} req/s × {Z:g})."
        )


def history_of(data: Mapping[str, JSONValue], now_s: float, rate: float) -> list[tuple[float, float]]:
    """The rate history from the state, with this tick's rate, trimmed to ``HISTORY_S``."""
    raw = data.get("rates", [])
    out: list[tuple[float, float]] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, list) and len(item) == 2:
                t, r = _num(item[0]), _num(item[1])
                if t is not None and r is not None and now_s - HISTORY_S <= t < now_s and r >= 0.0:
                    out.append((t, r))
    out.append((now_s, rate))
    return out


def forecast(history: Sequence[tuple[float, float]], horizon_s: float) -> Forecast:
    now_t, now_r = history[-1]
    if len(history) < 3:
        return Forecast(now_r, 0.0, 0.0, horizon_s)
    ts = [t - now_t for t, _ in history]
    rs = [r for _, r in history]
    n = len(ts)
    mt, mr = sum(ts) / n, sum(rs) / n
    var_t = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rs, strict=True)) / var_t if var_t > 0 else 0.0
    resid = [r - (mr + slope * (t - mt)) for t, r in zip(ts, rs, strict=True)]
    sigma = math.sqrt(sum(e * e for e in resid) / max(1, n - 2))
    level = mr + slope * (0.0 - mt)  # the trend's value now, less noisy than the last window alone
    rate = max(now_r, max(level, now_r) + max(0.0, slope) * horizon_s + Z * sigma)
    return Forecast(rate, slope, sigma, horizon_s)


def forecast_load(load: LoadWindow, fc: Forecast) -> LoadWindow:
    if load.arrival_rate_rps <= 0.0 or fc.rate_rps <= load.arrival_rate_rps:
        return load
    return scaled(load, fc.rate_rps / load.arrival_rate_rps)


def scaled(load: LoadWindow, k: float) -> LoadWindow:
    """The window with ``k`` × its request rate (the same lengths)."""
    return replace(
        load,
        arrival_rate_rps=load.arrival_rate_rps * k,
        decode_tps=load.decode_tps * k,
        prefill_uncached_tps=load.prefill_uncached_tps * k,
    )


# --- closed-loop correction ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Correction:
    prefill: float = 1.0
    decode: float = 1.0

    def slo(self, slo: SLO) -> SLO:
        return SLO(slo.ttft_ms / self.prefill, slo.tbt_ms / self.decode, slo.percentile)

    def to_json(self) -> dict[str, JSONValue]:
        return {"prefill": self.prefill, "decode": self.decode}

    @classmethod
    def from_json(cls, raw: JSONValue) -> Correction:
        data = raw if isinstance(raw, dict) else {}

        def get(key: str) -> float:
            value = _num(data.get(key))
            return 1.0 if value is None else min(C_MAX, max(C_MIN, value))

        return cls(get("prefill"), get("decode"))


def _num(value: JSONValue) -> float | None:
    """A finite number from the stored state, or None (state written by another version, or damaged)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _step(c: float, observed: float | None, predicted: JSONValue) -> float:
    pred = _num(predicted)
    if observed is None or pred is None or pred <= 0.0:
        return c
    ratio = observed / pred
    return min(C_MAX, max(C_MIN, (1.0 - ALPHA) * c + ALPHA * ratio))


def corrected(data: Mapping[str, JSONValue], load: LoadWindow, now_s: float, settle_s: float) -> Correction:
    """The factors after this window's observation against the prediction of the plan in force, taken
    only once that plan has been in force for ``settle_s`` (its replicas started and a whole window
    observed them alone): before, the window mixes the previous plan, or replicas still loading."""
    c = Correction.from_json(data.get("correction", {}))
    last = data.get("predicted")
    if not isinstance(last, dict):
        return c
    rate, since = _num(last.get("rps")), _num(last.get("since"))
    if rate is None or rate <= 0.0 or abs(load.arrival_rate_rps - rate) > STEADY * rate:
        return c
    if since is None or now_s - since < settle_s:
        return c
    return Correction(
        _step(c.prefill, load.ttft_p99_ms, last.get("ttft_ms")),
        _step(c.decode, load.tbt_p99_ms, last.get("tbt_ms")),
    )


def prediction_record(
    data: Mapping[str, JSONValue],
    desired: Mapping[PoolKey, PoolPlan],
    load: LoadWindow,
    pred: Prediction,
    now_s: float,
) -> dict[str, JSONValue]:
    """What the next ticks judge: this plan's prediction, and since when its replica counts are in force."""
    counts: dict[str, JSONValue] = {str(k): v.replicas for k, v in sorted(desired.items())}
    last = data.get("predicted")
    since = now_s
    if isinstance(last, dict) and last.get("counts") == counts:
        since = _num(last.get("since")) or now_s
    return {
        "rps": load.arrival_rate_rps,
        "ttft_ms": pred.ttft_ms,
        "tbt_ms": pred.tbt_ms,
        "counts": counts,
        "since": since,
    }


def correction_sentence(c: Correction, slo: SLO) -> str | None:
    if abs(c.prefill - 1.0) < 0.02 and abs(c.decode - 1.0) < 0.02:
        return None
    planned = c.slo(slo)
    return (
        f"closed-loop correction: observed p99 / predicted is ×{c.prefill:.2f} for TTFT and ×{c.decode:.2f} "
        f"for TBT over recent windows; planning to TTFT {planned.ttft_ms:.0f} ms and TBT "
        f"{planned.tbt_ms:.1f} ms so the observed p99 meets the SLO."
    )
