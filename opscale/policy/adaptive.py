"""What the planners add to one window's load: a forecast over the time new replicas take to start, and a
closed-loop correction of their own latency model from what was observed.

**Forecast.** Capacity the planner asks for now serves requests from when it is ready: after a replica's
start-up, ``horizon_s`` (h). So the planner sizes for the load expected over that horizon, not the
window's mean. The arrival rates of the last ``HISTORY_S`` seconds of ticks (kept in the policy's state)
give a trend (least-squares slope) and how far the rate rises within h beyond it; the plan is for

    λ_plan = λ_c + Z · σ_h,   λ_c = λ_now + max(0, trend) · h

The planners take the window at λ_c with σ_h as its spread (``forecast_load``,
``LoadWindow.rate_spread_rps``): the rise over the start-up and the window's own estimate error σ_e
(``planner_loads``, "Estimation error") are independent, so a pool is sized for λ_c + Z·√(σ_h² + σ_e²),
the one-sided 95% bound of their sum, not the two bounds stacked; latencies are predicted at λ_c.
Only what the queueing models do not already price gets headroom:

* σ_h is the spread of the rate's change over h seconds (rate at t minus rate at t − h, the trend's
  part removed) — the burst a replica that starts now may meet — less the part that is the windows'
  Poisson noise: two windows of T seconds h apart estimate a Poisson rate λ with a difference of
  variance 2λ·min(h, T)/T², and the planners' queues (M/G/R prefill, Poisson residency in decode)
  already assume Poisson arrivals at the window's rate. The excess counts only beyond ``SIGNIFICANT``
  standard errors of the variance estimate (relative error √(2/k), k = span / max(h, T) independent
  pairs: increments of overlapping windows are correlated), or a quiet history would plan headroom by
  chance (120 s of history hold ~4 independent 30 s windows). So the headroom shrinks with the
  start-up: a replica that is ready in a second needs none for a rise that takes ten. With fewer than
  3 such pairs in the history, the spread around the trend less λ/T is used.
* the trend counts only when it is significant: above ``SIGNIFICANT`` standard errors, the errors of
  ticks whose windows overlap counted once per window (n_eff = span / T). The least-squares slope of a
  flat, noisy rate is as often up as down; taking its upward half plans above the load on every flat
  stretch. λ_now is the trend's value now, never below the last window (a falling trend's line runs
  below zero at a lull's edge), or without a trend the history's mean; either within ``SIGNIFICANT`` of
  the last window's Poisson standard errors (√(λ/T)) above it, and the mean as far below: the mean is
  less noisy than one window only where the history is flat, and a last window further from it is a
  change the mean lags.
  Unbounded, past a peak the level was the peak's (the demo at t = 120 s: a mean of 127 req/s against
  104 in the last window, and prefill planned for the load that had gone). It was also never below the
  last window; but a last window within its noise above a flat history is noise, and planning for it
  took the upper of two estimates of one rate, under the estimate's own bound (``planner_loads``): on
  Azure conv, mixtral-8x7b, 4.0% more GPU-hours at the same attainment (BENCHMARKS.md, 2026-12-07).
  Only an upward trend adds trend · h (a falling load is met by the scale-in window).

The horizon is the start-up of the largest replica the plan in force runs, on the fewest GPUs that hold
its weights (so it does not move with the replicas' shapes), from the weights it loads (the simulator's
``opscale.model.startup``); a measured start-up (parameter ``startup_s``) replaces the estimate.

**Lengths** are pooled over the recent past, fast up and slow down: ``opscale.policy.length_pool``.

**Correction** (as NVIDIA Dynamo's planner corrects its interpolated latency with the observed one). Per
stage, the ratio of the observed p99 (TTFT for prefill, TBT for decode) to the p99 the planner predicted
for the plan in force feeds an exponentially weighted factor c, bounded to [``C_MIN``, ``C_MAX``]; the
stage is then planned against SLO / c: a model that under-predicts by 20% plans to a budget 20% tighter.
A ratio is only taken when the plan's replica counts have been in force for a window plus a start-up (so
the window observed that plan alone, its replicas ready), the window saw the latency, and the load
moved less than ``STEADY`` since the prediction (otherwise the two describe different loads). The
observed p99 TTFT covers every prompt, the prediction only those some configuration serves within the
SLO (``planner_loads``): where the unservable ones are more than ``UNSERVABLE_TAIL`` of the
percentile's tail (0.1% of prompts for a p99), the observed p99 is decided by prompts the prediction
leaves out, and the TTFT factor is not updated. On the long-prompt scenario (~5% unservable) it was:
the factor sat at its 2× bound and prefill was planned to a 1 s TTFT.

A ratio is taken only where the predicted or the observed p99 reaches ``NEAR`` of the stage's SLO. The
factor scales plans made at the budget; a ratio measured far below it, where a whole replica runs at a
fraction of its batch, says little about them. On the long-prompt scenario (llama3-70b, forecast off) a
decode replica observed at ~20 ms against a 100 ms SLO, under-predicted there, raised the decode factor
toward its bound; the whole-model form then no longer met SLO / c, decode switched to operator pools
that took more GPUs, and the run spent 12.26 GPU-h against 11.43 without the ratios taken far below
the budget, both at 100% attainment. A ratio near the budget, or an observed p99 at or past it, is
still taken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from opscale.model import PerfModel
from opscale.model.memory import usable_bytes
from opscale.model.startup import startup_s
from opscale.policy.jsonval import JSONValue, finite_or_none
from opscale.policy.types import SLO, LoadWindow, PoolKey, PoolPlan, Prediction

HISTORY_S = 120.0
Z = 1.645  # one-sided 95% headroom on the rate's spread
SIGNIFICANT = 2.0  # a trend, or a spread beyond Poisson, counts above this many standard errors
C_MIN, C_MAX = 0.85, 2.0
ALPHA = 0.3  # weight of the newest ratio
STEADY = 0.2  # the load may differ by at most 20% between prediction and observation
NEAR = 0.5  # a ratio is taken only where the prediction or the observation reaches this share of the SLO
UNSERVABLE_TAIL = 0.1  # TTFT is compared only while unservable prompts are < 10% of the percentile's tail


def horizon_s(perf: PerfModel, current: Mapping[PoolKey, PoolPlan]) -> float:
    """Start-up of the largest replica the plan in force runs, each on the fewest GPUs that hold its
    weights (a whole-model replica when nothing runs yet). The fewest GPUs, not the replica's own: more
    GPUs load the weights faster, so the start-up of the shape in force would make the horizon (and the
    forecast) depend on that shape, and the shape on the forecast: llama3-70b's decode FFN on 2 GPUs
    starts in 14 s and on 4 in 9 s, and a stage alternated between the two every tick."""
    every = tuple(sorted({spec.kind.value for st in ("prefill", "decode") for spec in perf.operators(st)}))
    running = [
        every if pool.operator == "model" else (pool.operator,)
        for pool, plan in current.items()
        if plan.replicas
    ]
    usable, best = usable_bytes(perf.gpu.memory_bytes), 0.0
    for ops in running or [every]:
        weights = sum(perf.weights_bytes(op) for op in ops)
        best = max(best, startup_s(perf.gpu.key, weights, math.ceil(weights / usable)))
    return best


@dataclass(frozen=True, slots=True)
class Forecast:
    central_rps: float  # λ_now + max(0, trend) · h: the forecast without the burst's headroom
    slope_rps_per_s: float
    sigma_rps: float
    horizon_s: float
    recent_rps: float = 0.0  # > 0: started from the window's last seconds (opscale.policy.recent)

    @property
    def rate_rps(self) -> float:
        """λ_plan: the central rate and Z of the burst."""
        return self.central_rps + Z * self.sigma_rps

    def sentence(self, now_rps: float) -> str:
        now = f"now {now_rps:.3g}" + (
            f", at least {self.recent_rps:.3g} over the last seconds" if self.recent_rps else ""
        )
        return (
            f"forecast: planned for {self.rate_rps:.3g} req/s over the next {self.horizon_s:.0f} s of "
            f"replica start-up ({now}, trend {self.slope_rps_per_s:+.3g} req/s², rise within "
            f"the start-up beyond Poisson noise σ {self.sigma_rps:.2g} req/s × {Z:g})."
        )


def history_of(data: Mapping[str, JSONValue], now_s: float, rate: float) -> list[tuple[float, float]]:
    """The rate history from the state, with this tick's rate, trimmed to ``HISTORY_S``."""
    raw = data.get("rates", [])
    out: list[tuple[float, float]] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, list) and len(item) == 2:
                t, r = finite_or_none(item[0]), finite_or_none(item[1])
                if t is not None and r is not None and now_s - HISTORY_S <= t < now_s and r >= 0.0:
                    out.append((t, r))
    out.append((now_s, rate))
    return out


def forecast(history: Sequence[tuple[float, float]], horizon_s: float, window_s: float = 0.0) -> Forecast:
    """The load to plan for (module docstring); ``window_s``: the length of the windows the rates were
    measured over (0: treat every rate as exact, no Poisson noise to discount)."""
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
    span = ts[-1] - ts[0]
    n_eff = min(float(n), max(3.0, span / window_s)) if window_s > 0.0 else float(n)
    se = sigma / math.sqrt(var_t) * math.sqrt(n / n_eff) if var_t > 0 else math.inf
    fit = slope if abs(slope) > SIGNIFICANT * se else 0.0  # a trend either way, or none
    noise = window_noise(now_r, window_s)
    low = now_r if fit else now_r - noise  # the mean is the better estimate only where the history is flat
    level = min(max(mr + fit * (0.0 - mt), low), now_r + noise)
    burst = _rise_sigma(ts, rs, fit, horizon_s, window_s, level)
    if burst is None:
        poisson = level / window_s if window_s > 0.0 else 0.0
        burst = math.sqrt(max(0.0, sigma * sigma - poisson))
    trend = max(0.0, fit)
    return Forecast(level + trend * horizon_s, trend, burst, horizon_s)


def window_noise(rate: float, window_s: float) -> float:
    """``SIGNIFICANT`` standard errors of a Poisson rate measured over a window of ``window_s`` (0: the
    rate is exact)."""
    return SIGNIFICANT * math.sqrt(rate / window_s) if window_s > 0.0 else 0.0


def _rise_sigma(
    ts: Sequence[float], rs: Sequence[float], trend: float, h: float, window_s: float, rate: float
) -> float | None:
    """σ of the rate's change over ``h`` seconds beyond the trend and the windows' Poisson noise; None
    with fewer than 3 pairs of ticks that far apart."""
    sq, noise, pairs, j = 0.0, 0.0, 0, 0
    for i in range(len(ts)):
        while j + 1 < i and ts[i] - ts[j + 1] >= h:
            j += 1
        if j >= i or ts[i] - ts[j] < h:  # h shorter than a tick: adjacent ticks (j = i - 1)
            continue
        gap = ts[i] - ts[j]
        d = rs[i] - rs[j] - trend * gap
        sq += d * d
        if window_s > 0.0:
            noise += 2.0 * rate * min(gap, window_s) / (window_s * window_s)
        pairs += 1
    if pairs < 3:
        return None
    k = max(2.0, (ts[-1] - ts[0]) / max(h, window_s, 1e-9))
    allowed = noise * (1.0 + SIGNIFICANT * math.sqrt(2.0 / k)) if noise > 0.0 else 0.0
    return math.sqrt(max(0.0, (sq - allowed) / pairs))


def forecast_load(load: LoadWindow, fc: Forecast) -> LoadWindow:
    """The window at the forecast's central rate, its burst σ_h as the rate's spread: the planners add it
    to the window's estimate error in quadrature (``planner_loads.rate_bound``), not Z·σ_h on top."""
    if load.arrival_rate_rps <= 0.0 or (fc.central_rps == load.arrival_rate_rps and fc.sigma_rps == 0.0):
        return load
    out = scaled(load, fc.central_rps / load.arrival_rate_rps)
    return replace(out, rate_spread_rps=math.hypot(out.rate_spread_rps, fc.sigma_rps))


def covered_rps(load: LoadWindow) -> float:
    """The rate a plan for ``load`` covers besides the window's estimate error: its rate and Z of its
    spread (the forecast's λ_plan)."""
    return load.arrival_rate_rps + Z * load.rate_spread_rps


def scaled(load: LoadWindow, k: float) -> LoadWindow:
    """The window with ``k`` × its request rate and spread (the same lengths)."""
    return replace(
        load,
        arrival_rate_rps=load.arrival_rate_rps * k,
        rate_spread_rps=load.rate_spread_rps * k,
        decode_tps=load.decode_tps * k,
        prefill_uncached_tps=load.prefill_uncached_tps * k,
    )


# --- closed-loop correction ------------------------------------------------------------------------


FORMS = ("model", "operator")  # a stage's forms: whole-model replicas, operator pools (policy.hybrid)
WHOLE = {"prefill": "model", "decode": "model"}


def form_name(form: str | None) -> str:
    return "whole-model replicas" if form == "model" else "operator pools"


@dataclass(frozen=True, slots=True)
class Correction:
    """Per stage and form (``model``: whole-model replicas, ``operator``: operator pools) — a form is
    corrected by what was observed while it ran, so a form the model mis-predicts pays for it alone and
    the hybrid can leave it for the other."""

    prefill: float = 1.0
    decode: float = 1.0
    prefill_operator: float = 1.0
    decode_operator: float = 1.0

    def factor(self, stage: str, form: str) -> float:
        return float(getattr(self, stage if form == "model" else f"{stage}_operator"))

    def slo(self, slo: SLO, forms: Mapping[str, str] = WHOLE) -> SLO:
        """The SLO the stages plan against when they run ``forms``."""
        return SLO(
            slo.ttft_ms / self.factor("prefill", forms.get("prefill", "model")),
            slo.tbt_ms / self.factor("decode", forms.get("decode", "model")),
            slo.percentile,
        )

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "prefill": self.prefill,
            "decode": self.decode,
            "prefill_operator": self.prefill_operator,
            "decode_operator": self.decode_operator,
        }

    @classmethod
    def from_json(cls, raw: JSONValue) -> Correction:
        data = raw if isinstance(raw, dict) else {}

        def get(key: str, default: float = 1.0) -> float:
            value = finite_or_none(data.get(key))
            return default if value is None else min(C_MAX, max(C_MIN, value))

        pre, dec = get("prefill"), get("decode")
        # a state written before the forms were told apart: its factor stood for both forms
        return cls(pre, dec, get("prefill_operator", pre), get("decode_operator", dec))


def _step(c: float, observed: float | None, predicted: JSONValue) -> float:
    pred = finite_or_none(predicted)
    if observed is None or pred is None or pred <= 0.0:
        return c
    ratio = observed / pred
    return min(C_MAX, max(C_MIN, (1.0 - ALPHA) * c + ALPHA * ratio))


def corrected(
    data: Mapping[str, JSONValue], load: LoadWindow, now_s: float, settle_s: float, slo: SLO | None = None
) -> Correction:
    """The factors after this window's observation against the prediction of the plan in force, taken
    only once that plan has been in force for ``settle_s`` (its replicas started and a whole window
    observed them alone): before, the window mixes the previous plan, or replicas still loading. Each
    stage's observation updates the factor of the form that stage ran (both, for a record without forms)."""
    c = Correction.from_json(data.get("correction", {}))
    last = data.get("predicted")
    if not isinstance(last, dict):
        return c
    rate, since = finite_or_none(last.get("rps")), finite_or_none(last.get("since"))
    if rate is None or rate <= 0.0 or abs(load.arrival_rate_rps - rate) > STEADY * rate:
        return c
    if since is None or now_s - since < settle_s:
        return c
    raw = last.get("forms")
    forms = raw if isinstance(raw, dict) else {}
    ttft = load.ttft_p99_ms
    unservable, tail = finite_or_none(last.get("unservable")) or 0.0, finite_or_none(last.get("tail")) or 0.01
    if unservable > UNSERVABLE_TAIL * tail:
        ttft = None  # the observed p99 falls among prompts the prediction leaves out (module docstring)
    out = {}
    for stage, observed, key, budget in (
        ("prefill", ttft, "ttft_ms", None if slo is None else slo.ttft_ms),
        ("decode", load.tbt_p99_ms, "tbt_ms", None if slo is None else slo.tbt_ms),
    ):
        pred = finite_or_none(last.get(key)) or 0.0
        if budget is not None and observed is not None and max(pred, observed) < NEAR * budget:
            observed = None  # a ratio far below the budget says little about plans at it (docstring)
        ran = forms.get(stage)
        for form in FORMS:
            name = stage if form == "model" else f"{stage}_operator"
            value = c.factor(stage, form)
            out[name] = _step(value, observed, last.get(key)) if ran in (form, None) else value
    return Correction(**out)


def prediction_record(
    data: Mapping[str, JSONValue],
    desired: Mapping[PoolKey, PoolPlan],
    load: LoadWindow,
    pred: Prediction,
    now_s: float,
    forms: Mapping[str, str] = WHOLE,
    quantile: float = 0.99,
) -> dict[str, JSONValue]:
    """What the next ticks judge: this plan's prediction, and since when its replica counts are in force;
    ``quantile``: the SLO's percentile, as a fraction."""
    counts: dict[str, JSONValue] = {str(k): v.replicas for k, v in sorted(desired.items())}
    last = data.get("predicted")
    since = now_s
    if isinstance(last, dict) and last.get("counts") == counts:
        since = finite_or_none(last.get("since")) or now_s
    return {
        "rps": load.arrival_rate_rps,
        "unservable": pred.unservable_fraction,
        "tail": 1.0 - quantile,
        "ttft_ms": pred.ttft_ms,
        "tbt_ms": pred.tbt_ms,
        "counts": counts,
        "since": since,
        "forms": dict(forms),
    }


def correction_sentence(c: Correction, slo: SLO, forms: Mapping[str, str] = WHOLE) -> str | None:
    """What the correction of the forms in force does to the SLO planned for (None: nothing to say)."""
    pre, dec = (
        c.factor("prefill", forms.get("prefill", "model")),
        c.factor("decode", forms.get("decode", "model")),
    )
    others = [
        f"{stage} {form_name(form)} ×{c.factor(stage, form):.2f}"
        for stage in ("prefill", "decode")
        for form in FORMS
        if form != forms.get(stage, "model") and abs(c.factor(stage, form) - 1.0) >= 0.02
    ]
    if abs(pre - 1.0) < 0.02 and abs(dec - 1.0) < 0.02 and not others:
        return None
    planned = c.slo(slo, forms)
    said = (
        f"closed-loop correction: observed p99 / predicted is ×{pre:.2f} for TTFT and ×{dec:.2f} "
        f"for TBT over recent windows; planning to TTFT {planned.ttft_ms:.0f} ms and TBT "
        f"{planned.tbt_ms:.1f} ms so the observed p99 meets the SLO."
    )
    if others:
        said += f" Forms not running keep theirs: {', '.join(others)}."
    return said
