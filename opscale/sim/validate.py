"""Model validation: each planner's own plan for a steady load, held fixed in the simulator, against what
the planner predicted — and its GPUs against the simulated oracle's (``opscale.sim.oracle``).

The grid: llama3-70b, mixtral-8x7b, qwen2-7b and qwen2-57b-a14b × three rates each (scaled to the model's
size) × three length mixes (``fixed``, ``sharegpt``, ``longtail``: ``opscale.sim.mixes``) × three
planners: ``model``, ``operator`` (operator pools in every stage) and ``hybrid`` (what the operator
policy runs: either form per stage, ``opscale.policy.hybrid``). Per point the planner sees the first
trace as a perfect observer would (its rate and length distributions) and plans; the plan then runs on
``seeds`` independent traces of that load (``SEEDS`` on the full grid), and the measured p99 is the p99
of their requests together: the long-run percentile the planner predicts. The prediction judged against
it is the planner's model for that plan, held fixed, at the load the traces carried (their measured
requests end to end, ``planner_stage.predict``): a model is judged on the load it is given. The plan's
own prediction, from the one trace it saw, is kept too (``ttft_plan_ms``, ``tbt_plan_ms``); the two
differ by the error of estimating a load from one 240 s window, which the planner's sizing for the
estimate's upper bound covers (``planner_loads.sized_rate``), not its model. llama3-70b at 20 req/s of
1,024-token prompts: the first trace's prompts came at 19.6 req/s, eight traces' at 20.0, and at ρ 0.76
that moves the predicted p99 TTFT by 7% (410 → 439 ms).

The p99 of one trace of a long-tailed mix moves by tens of per cent from one trace to the next, because
a few overlapping long prompts block every replica now and then: llama3-70b at 8 req/s on the
``longtail`` mix measured 1.8–3.7 s over eight traces of 240 s, and the mean of the first three traces'
p99s (2.9 s) stood 35% above the eight traces' pooled p99 (2.1 s). Each trace's own p99 is kept
(``ttft_sim_seeds_ms``), and a plan meets the SLO only if it does on every trace (``meets_slo``). That is
stricter than the SLO the planners size for, a long-run p99: one 240 s trace can hold an excursion that
the long run averages out (mixtral-8x7b at 16 req/s of 1,024/256 tokens, one 2-GPU decode replica: a
p99 time to the second token of 24 ms on seven traces, 265 ms on the eighth, within the SLO over the eight
pooled). So the long-run criterion is reported beside it:
the same SLO over the requests of every trace together (``meets_slo_pooled``, with the time to the second
token pooled too). A plan whose own planner predicts it past the SLO (``planned_within_slo`` False) is that
planner's best for a load no plan of its layout it can find serves within the SLO (the pure operator
layout on the long tail: its longest servable prompts need 8-GPU attention and FFN replicas, which
cannot share a node, so every layer's hand-off of a prompt's activations crosses the network); the
summary counts those apart.

The error is (predicted − measured) / measured: positive means the planner over-provisions, negative
that it would miss the SLO. Predicted and measured cover the same requests: those a configuration can
serve at all (``fixed.unservable``), which are reported separately.

``quick`` is a CI-sized subset: two models, one rate, two mixes, one seed, shorter runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from opscale.policy.model_level import plan_model
from opscale.policy.operator import plan_hybrid, plan_operator
from opscale.policy.planner_stage import predict
from opscale.policy.types import LoadWindow
from opscale.sim.fixed import Steady, pooled_p99, run_sampled, steady_trace
from opscale.sim.observe import window_of
from opscale.sim.oracle import gpus_of, long_trial_s, oracle
from opscale.sim.traces import Trace

MODELS = ("llama3-70b", "mixtral-8x7b", "qwen2-7b", "qwen2-57b-a14b")
MIXES = ("fixed", "sharegpt", "longtail")
RATES: dict[str, tuple[float, ...]] = {
    "llama3-70b": (2.0, 8.0, 20.0),
    "mixtral-8x7b": (4.0, 16.0, 40.0),
    "qwen2-7b": (8.0, 32.0, 80.0),
    "qwen2-57b-a14b": (4.0, 16.0, 40.0),
}
PLANNERS = ("model", "operator", "hybrid")
PLAN = {"model": plan_model, "operator": plan_operator, "hybrid": plan_hybrid}
MIN_REQUESTS = 3000  # per seed: a p99 needs ~30 requests above it
SEEDS = 8  # traces per point on the full grid (module docstring)
ORACLE_SEEDS = 3  # the oracle's search confirms its plan on the first this many


@dataclass(frozen=True, slots=True)
class Point:
    model: str
    planner: str
    rps: float
    mix: str
    ttft_pred_ms: float  # the model's, for the plan at the load the seeds carried (module docstring)
    ttft_sim_ms: float  # p99 over the measured requests of every seed together
    tbt_pred_ms: float
    tbt_sim_ms: float
    ttst_sim_ms: float
    gpus: int
    oracle_gpus: int | None  # None: the oracle found no plan of this layout that meets the SLO
    gpus_placed: float
    oracle_gpus_placed: float
    meets_slo: bool  # every seed: p99 TTFT and per-request TBT within the SLO, none rejected, no KV stall
    # the seeds' requests together (the long-run p99s the planner sizes for): p99 TTFT, per-request TBT
    # and time to the second token within the SLO, none rejected or unfinished
    meets_slo_pooled: bool
    # the plan's own prediction is within the SLO; False: its planner found no plan of its layout that
    # it predicts to meet the SLO, and planned its best (module docstring)
    planned_within_slo: bool
    attainment: float  # share of servable requests meeting both SLOs (worst seed)
    unservable: float  # share of requests no configuration can serve within the SLO
    predicted_unservable: float
    seeds: int
    ttft_sim_seeds_ms: tuple[float, ...] = ()  # each seed's own p99 TTFT: the trace-to-trace spread
    oracle_searched: bool = True  # False: run without the oracle (``oracle_gpus`` None, ratios NaN)
    ttft_plan_ms: float = math.nan  # the plan's own prediction, from the one trace the planner saw
    tbt_plan_ms: float = math.nan

    @property
    def ttft_error(self) -> float:
        return _err(self.ttft_pred_ms, self.ttft_sim_ms)

    @property
    def tbt_error(self) -> float:
        return _err(self.tbt_pred_ms, self.tbt_sim_ms)

    @property
    def ttft_plan_error(self) -> float:
        return _err(self.ttft_plan_ms, self.ttft_sim_ms)

    @property
    def tbt_plan_error(self) -> float:
        return _err(self.tbt_plan_ms, self.tbt_sim_ms)

    @property
    def oracle_ratio(self) -> float:
        return self.gpus / self.oracle_gpus if self.oracle_gpus else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ttft_error": self.ttft_error,
            "tbt_error": self.tbt_error,
            "ttft_plan_error": self.ttft_plan_error,
            "tbt_plan_error": self.tbt_plan_error,
            "oracle_ratio": self.oracle_ratio,
        }


def _err(pred: float, sim: float) -> float:
    return (pred - sim) / sim if sim > 0 and math.isfinite(sim) and math.isfinite(pred) else math.nan


def steady_seconds(rps: float) -> float:
    """A steady trace long enough for a p99 at ``rps``: ``MIN_REQUESTS`` after the warm-up, at least 240 s."""
    return max(240.0, MIN_REQUESTS / rps + 40.0)


def grid(quick: bool) -> list[tuple[Steady, str]]:
    if quick:
        return [
            (Steady(m, RATES[m][1], mix, seconds=200.0), p)
            for m in ("llama3-70b", "qwen2-57b-a14b")
            for mix in ("fixed", "longtail")
            for p in PLANNERS
        ]
    out = []
    for m in MODELS:
        for mix in MIXES:
            for r in RATES[m]:
                out += [(Steady(m, r, mix, seconds=steady_seconds(r)), p) for p in PLANNERS]
    return out


def validate_point(load: Steady, planner: str, seeds: Sequence[int], *, with_oracle: bool = True) -> Point:
    """Plan, run on every seed, search the oracle of the planner's layout (on the first
    ``ORACLE_SEEDS`` seeds and the long trial; ``with_oracle`` False: skip it, the model's accuracy
    alone)."""
    perf = load.perf()
    plan = PLAN[planner](perf, window_of(steady_trace(load, seeds[0]), 0.0, load.seconds), load.slo)
    runs = [run_sampled(load, plan.pools, s) for s in seeds]
    outs = [o for o, _ in runs]
    long_s = long_trial_s(load.seconds)
    orc = (
        oracle(load, planner, seeds=seeds[:ORACLE_SEEDS], start=plan.pools, confirm_s=long_s)
        if with_oracle
        else None
    )
    pred = plan.prediction
    plan_ttft = pred.ttft_ms if pred.ttft_ms is not None else math.inf
    plan_tbt = pred.tbt_ms if pred.tbt_ms is not None else math.inf
    ttft_ms, tbt_ms = predict(perf, plan, _measured_load(load, seeds), load.slo)
    ttft_sim = pooled_p99([s.ttft_ms for _, s in runs])
    tbt_sim = pooled_p99([s.tbt_ms for _, s in runs])
    n = len(outs)
    return Point(
        model=load.model,
        planner=planner,
        rps=load.rate_rps,
        mix=load.mix,
        ttft_pred_ms=ttft_ms,
        ttft_sim_ms=ttft_sim,
        tbt_pred_ms=tbt_ms,
        tbt_sim_ms=tbt_sim,
        ttft_sim_seeds_ms=tuple(o.ttft_p99_ms for o in outs),
        ttst_sim_ms=max(o.ttst_p99_ms for o in outs),
        gpus=gpus_of(plan.pools),
        oracle_gpus=orc.gpus if orc is not None and orc.feasible else None,
        gpus_placed=sum(o.gpus_placed for o in outs) / n,
        oracle_gpus_placed=orc.gpus_placed if orc is not None else math.nan,
        meets_slo=all(o.meets(load.slo) and o.ttst_p99_ms <= load.tbt_ms for o in outs),
        attainment=min(o.attainment for o in outs),
        unservable=sum(o.unservable for o in outs) / max(1, sum(o.requests + o.unservable for o in outs)),
        predicted_unservable=pred.unservable_fraction,
        seeds=n,
        oracle_searched=orc is not None,
        ttft_plan_ms=plan_ttft,
        tbt_plan_ms=plan_tbt,
        meets_slo_pooled=(
            ttft_sim <= load.ttft_ms
            and tbt_sim <= load.tbt_ms
            and pooled_p99([s.ttst_ms for _, s in runs]) <= load.tbt_ms
            and not any(o.rejected or o.unfinished for o in outs)
        ),
        planned_within_slo=plan_ttft <= load.ttft_ms and plan_tbt <= load.tbt_ms,
    )


def _measured_load(load: Steady, seeds: Sequence[int]) -> LoadWindow:
    """What a perfect observer would report of the requests measured on every seed's trace, end to end."""
    span = load.seconds - load.warmup_s
    parts = [steady_trace(load, s).window(load.warmup_s, load.seconds) for s in seeds]
    arrivals = np.concatenate([t.arrival_s + k * span for k, t in enumerate(parts)])
    inputs = np.concatenate([t.input_tokens for t in parts])
    outputs = np.concatenate([t.output_tokens for t in parts])
    return window_of(Trace("measured", arrivals, inputs, outputs), 0.0, span * len(parts))


def _job(load: Steady, planner: str, seeds: tuple[int, ...], with_oracle: bool) -> dict[str, Any]:
    return validate_point(load, planner, seeds, with_oracle=with_oracle).to_json()


def run_validation(
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    workers: int = 1,
    models: Sequence[str] | None = None,
    on_done: Callable[[str], None] | None = None,
    with_oracle: bool = True,
) -> list[dict[str, Any]]:
    """Every grid point (in grid order whatever the completion order), as JSON objects."""
    use = tuple(seeds) if seeds else ((0,) if quick else tuple(range(SEEDS)))
    jobs = [(ld, p) for ld, p in grid(quick) if not models or ld.model in models]
    results: dict[int, dict[str, Any]] = {}
    if workers <= 1:
        for i, (ld, p) in enumerate(jobs):
            results[i] = _job(ld, p, use, with_oracle)
            if on_done:
                on_done(_label(ld, p))
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            futs = {ex.submit(_job, ld, p, use, with_oracle): i for i, (ld, p) in enumerate(jobs)}
            for f in as_completed(futs):
                i = futs[f]
                results[i] = f.result()
                if on_done:
                    on_done(_label(*jobs[i]))
    return [results[i] for i in range(len(jobs))]


def _label(load: Steady, planner: str) -> str:
    return f"{load.model} {planner} {load.rate_rps:g} req/s {load.mix}"


def with_best_oracle(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each point with ``best_oracle_gpus`` — the fewest GPUs the oracle found for that load in any
    layout — and the planner's GPUs over it (``best_oracle_ratio``)."""
    best: dict[tuple[Any, ...], int] = {}
    for p in points:
        if p["oracle_gpus"] is not None:
            key = (p["model"], p["rps"], p["mix"])
            best[key] = min(best.get(key, p["oracle_gpus"]), p["oracle_gpus"])
    out = []
    for p in points:
        b = best.get((p["model"], p["rps"], p["mix"]))
        out.append({**p, "best_oracle_gpus": b, "best_oracle_ratio": p["gpus"] / b if b else math.nan})
    return out


def summary(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's yardsticks over a grid: share within ±15%, worst error, SLO met, GPUs vs the oracle
    (its own layout's, and the best of any layout's)."""
    points = with_best_oracle(points)

    def worst(key: str) -> float:
        vals = [abs(p[key]) for p in points if math.isfinite(p[key])]
        return max(vals) if vals else math.nan

    by = {pl: [p for p in points if p["planner"] == pl] for pl in PLANNERS}
    return {
        "points": len(points),
        "ttft_within_15": share_within_of(points, "ttft_error"),
        "tbt_within_15": share_within_of(points, "tbt_error"),
        "ttft_plan_within_15": share_within_of(points, "ttft_plan_error"),
        "tbt_plan_within_15": share_within_of(points, "tbt_plan_error"),
        "ttft_worst": worst("ttft_error"),
        "tbt_worst": worst("tbt_error"),
        "meets_slo": sum(bool(p["meets_slo"]) for p in points),
        **_pooled_counts(points),
        "oracle_ratio_max": _max_ratio(points),
        "oracle_infeasible": sum(p["oracle_gpus"] is None and p["oracle_searched"] for p in points),
        "oracle_searched": sum(bool(p["oracle_searched"]) for p in points),
        "per_planner": {
            pl: {
                "ttft_within_15": share_within_of(ps, "ttft_error"),
                "tbt_within_15": share_within_of(ps, "tbt_error"),
                "oracle_ratio_max": _max_ratio(ps),
                "best_oracle_ratio_max": _max_ratio(ps, "best_oracle_ratio"),
                "meets_slo": sum(bool(p["meets_slo"]) for p in ps),
                **_pooled_counts(ps),
                "points": len(ps),
            }
            for pl, ps in by.items()
            if ps
        },
    }


def _pooled_counts(points: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Plans meeting the SLO over their traces pooled; plans their own planner predicted past the SLO;
    and of the others, those meeting it pooled."""
    within = [p for p in points if p["planned_within_slo"]]
    return {
        "meets_slo_pooled": sum(bool(p["meets_slo_pooled"]) for p in points),
        "planned_past_slo": len(points) - len(within),
        "meets_slo_pooled_as_planned": sum(bool(p["meets_slo_pooled"]) for p in within),
    }


def _max_ratio(points: Sequence[dict[str, Any]], key: str = "oracle_ratio") -> float:
    vals = [p[key] for p in points if math.isfinite(p[key])]
    return max(vals) if vals else math.nan


def share_within_of(points: Sequence[dict[str, Any]], key: str, bound: float = 0.15) -> float:
    vals = [abs(p[key]) for p in points if math.isfinite(p[key])]
    return sum(v <= bound for v in vals) / len(vals) if vals else math.nan


def _oracle_cell(p: dict[str, Any]) -> str:
    if not p["oracle_searched"]:
        return "not searched"
    return str(p["oracle_gpus"]) if p["oracle_gpus"] is not None else "none"


def _ratio_cell(p: dict[str, Any], key: str) -> str:
    return f"{p[key]:.2f}" if p["oracle_searched"] else "–"


def _met_cell(p: dict[str, Any]) -> str:
    """yes: on every trace; pooled: over the traces together only; NO; "planned past" where the plan's
    own prediction already missed."""
    met = "yes" if p["meets_slo"] else "pooled" if p["meets_slo_pooled"] else "NO"
    return met if p["planned_within_slo"] else f"{met} (planned past)"


def markdown(points: Sequence[dict[str, Any]]) -> str:
    head = (
        "| model | planner | req/s | mix | GPUs | oracle | ×oracle | best oracle | ×best | TTFT p99 pred | "
        "sim | err | TBT p99 pred | sim | err | TTST p99 | SLO met | unservable |"
    )
    rows = [head, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for p in with_best_oracle(points):
        rows.append(
            f"| {p['model']} | {p['planner']} | {p['rps']:g} | {p['mix']} | {p['gpus']} | "
            f"{_oracle_cell(p)} | {_ratio_cell(p, 'oracle_ratio')} | {p['best_oracle_gpus'] or 'none'} | "
            f"{_ratio_cell(p, 'best_oracle_ratio')} | "
            f"{p['ttft_pred_ms']:.0f} | {p['ttft_sim_ms']:.0f} | "
            f"{100 * p['ttft_error']:+.0f}% | {p['tbt_pred_ms']:.1f} | {p['tbt_sim_ms']:.1f} | "
            f"{100 * p['tbt_error']:+.0f}% | {p['ttst_sim_ms']:.0f} | {_met_cell(p)} | "
            f"{100 * p['unservable']:.1f}% |"
        )
    return "\n".join(rows)
