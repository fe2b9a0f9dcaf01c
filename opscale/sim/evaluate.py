"""The evaluation matrix (traces × models × SLOs × policies): runs in worker processes, then writes
``results.json``, ``results.md`` and PNG plots.

Models: llama3-70b, mixtral-8x7b, the OpScale paper's qwen2-7b and qwen2-57b-a14b (all profiled on an
H100), and mixtral-8x22b, a large MoE priced from its published config (``opscale.model.estimate``,
flagged "estimated" in every report). SLO TTFT p99 ≤ 2 s and TBT p99 ≤ 100 ms unless said.

``quick``: the first 10 minutes of Azure conv (×4 rate) for every model, and of the long-prompt
scenario for llama3-70b (23 min on two cores with both planners swept and the oracle column: an
operator run of 10 simulated minutes costs ~1 CPU-minute, a model run seconds).
``full``: per model, Azure conv (×4) and Azure code (×6) hours; 24 hours of ServeGen m-large at 10% of
its rate (~20 req/s) with each 10-minute window replayed in 60 s (time compression: the day's rate
profile in 2.4 simulated hours; autoscalers see load change 10× faster than in the trace, which is
harder for all of them, not easier); the long-prompt scenario: Azure conv's arrivals (×1) with every
request's lengths re-drawn from the ``longtail`` mix (``opscale.sim.mixes``: ShareGPT pairs, 8% of
prompts log-uniform in 16k–128k tokens); and for llama3-70b and mixtral-8x7b a tighter 1 s / 50 ms
on Azure conv.

Equal attainment (``opscale.sim.attainment``): the planning policies also run at every headroom of
``SWEEP``; the report reads each one's GPU-hours at the highest attainment both reach.

The oracle's per-level GPUs are cached in a file keyed by ``physics_version()``: a hash of the model,
policy, placement and simulator sources and data, so a cache written by other physics is never reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from opscale.errors import InvalidArgument
from opscale.sim.attainment import Comparison, Point, compare
from opscale.sim.difference import breakdown, sentence
from opscale.sim.experiment import (
    HEADROOM_POLICIES,
    POLICIES,
    Scenario,
    build_trace,
    load_levels,
    lower_bound,
    oracle_gpus,
    run_one,
)
from opscale.sim.run import SimResult
from opscale.sim.traces import Trace

MODELS = ("llama3-70b", "mixtral-8x7b", "qwen2-7b", "qwen2-57b-a14b", "mixtral-8x22b")
TIGHT_SLO_MODELS = ("llama3-70b", "mixtral-8x7b")
# Headroom values of the equal-attainment sweep (0 is the default run).
SWEEP = (0.0, 0.25, 0.5, 1.0)
LONG_PROMPTS = "longtail"


def long_prompt(model: str, **kw: Any) -> Scenario:
    """Azure conv's arrivals with every request's lengths re-drawn from the long-tail mix."""
    return Scenario("azure-conv", model, rate_scale=1.0, lengths=LONG_PROMPTS, **kw)


def quick_matrix() -> list[Scenario]:
    out = [Scenario("azure-conv", m, rate_scale=4.0, duration_s=600.0) for m in MODELS]
    return [*out, long_prompt("llama3-70b", duration_s=600.0)]


def full_matrix() -> list[Scenario]:
    out = []
    for m in MODELS:
        out.append(Scenario("azure-conv", m, rate_scale=4.0))
        if m in TIGHT_SLO_MODELS:
            out.append(Scenario("azure-conv", m, rate_scale=4.0, ttft_ms=1000.0, tbt_ms=50.0))
        out.append(Scenario("azure-code", m, rate_scale=6.0))
        out.append(Scenario("servegen-m-large", m, rate_scale=0.1, speedup=10.0, seed=1))
        out.append(long_prompt(m))
    return out


# What the oracle's answer depends on besides the scenario: every source and data file of these
# packages (placement counts the GPUs; the planners give the oracle its starting plans).
_PHYSICS = ("model", "policy", "placement", "sim")
_PHYSICS_SUFFIXES = (".py", ".json", ".csv")
_REPORT_ONLY = frozenset({"sim/evaluate.py", "sim/plots.py", "sim/attainment.py"})  # change no result


@functools.lru_cache(maxsize=1)
def physics_version() -> str:
    """SHA-256 (first 16 hex digits) over the paths and bytes of the physics sources, in path order."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for pkg in _PHYSICS:
        for f in sorted((root / pkg).rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.suffix in _PHYSICS_SUFFIXES and f.is_file() and rel not in _REPORT_ONLY:
                h.update(rel.encode())
                h.update(b"\0")
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _series(res: SimResult, step: int = 10) -> dict[str, Any]:
    """Per-``step``-second series for the plots, plus per-minute latency percentiles."""
    n = len(res.gpus) // step * step

    def ds(a: np.ndarray) -> list[float]:
        return [float(x) for x in a[:n].reshape(-1, step).mean(axis=1)] if n else []

    req = res.requests
    minutes = math.ceil(len(res.gpus) / 60)
    ttft_p99, tbt_p99 = [], []
    tpot = np.where(req.tbt_n > 0, req.tbt_sum_s / np.maximum(req.tbt_n, 1), np.nan)
    idx = (req.arrival_s // 60).astype(np.int64)
    for k in range(minutes):
        sel = idx == k
        t = req.ttft_s[sel]
        t = t[~np.isnan(t)]
        ttft_p99.append(float(np.percentile(t, 99)) * 1e3 if len(t) else None)
        p = tpot[sel]
        p = p[~np.isnan(p)]
        tbt_p99.append(float(np.percentile(p, 99)) * 1e3 if len(p) else None)
    return {
        "step_s": step,
        "arrivals_rps": ds(res.arrivals.astype(float)),
        "gpus": ds(res.gpus.astype(float)),
        "replicas": {k: ds(v.astype(float)) for k, v in res.replicas.items()},
        "ttft_p99_ms_per_min": ttft_p99,
        "tpot_p99_ms_per_min": tbt_p99,
    }


def _job(sc: Scenario, policy: str, lb: float, headroom: float, forecast: bool = True) -> dict[str, Any]:
    m, res = run_one(sc, policy, lb=lb, headroom=headroom, forecast=forecast)
    return {
        "scenario": asdict(sc),
        "metrics": m.to_json(),
        "series": _series(res),
        "breakdown": breakdown(res),
    }


@functools.lru_cache(maxsize=8)
def _trace(sc: Scenario) -> Trace:
    return build_trace(sc)


def _level_job(sc: Scenario, level: float) -> float:
    return oracle_gpus(sc, _trace(sc), level)


T = TypeVar("T")


def _parallel(
    calls: Sequence[tuple[Callable[..., T], tuple[Any, ...], str]],
    workers: int,
    on_done: Callable[[str], None] | None,
) -> list[T]:
    """``fn(*args)`` for every call, in worker processes when ``workers`` > 1; results in call order."""
    out: dict[int, T] = {}
    if workers <= 1 or len(calls) <= 1:
        for i, (fn, args, label) in enumerate(calls):
            out[i] = fn(*args)
            if on_done:
                on_done(label)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(calls))) as ex:
            futs = {ex.submit(fn, *args): i for i, (fn, args, _) in enumerate(calls)}
            for f in as_completed(futs):
                out[futs[f]] = f.result()
                if on_done:
                    on_done(calls[futs[f]][2])
    return [out[i] for i in range(len(calls))]


def _level_key(sc: Scenario, level: float) -> str:
    return (
        f"{sc.label}|x{sc.rate_scale:g}|/{sc.speedup:g}|{sc.start_s:g}+{sc.duration_s}|{sc.seed}|{level:.6g}"
    )


def read_cache(cache_file: Path | None) -> dict[str, float]:
    """The cached oracle GPUs per level, if ``cache_file`` was written by this physics; else empty."""
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # unreadable: searched again and rewritten
    if not isinstance(data, dict) or data.get("physics") != physics_version():
        return {}
    levels = data.get("levels")
    return {str(k): float(v) for k, v in levels.items()} if isinstance(levels, dict) else {}


def write_cache(cache_file: Path, cache: dict[str, float]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    doc = {"physics": physics_version(), "levels": cache}
    cache_file.write_text(json.dumps(doc, indent=1, sort_keys=True))


def lower_bounds(
    scenarios: Sequence[Scenario],
    *,
    workers: int,
    cache_file: Path | None = None,
    on_done: Callable[[str], None] | None = None,
) -> list[float]:
    """Per scenario, the oracle's GPU-hours (``experiment.lower_bound``): the oracle searched once per load
    level of the trace (minute rates on a 10% grid), cached in ``cache_file`` across runs."""
    cache = read_cache(cache_file)
    per: list[tuple[np.ndarray, float]] = []
    todo: dict[str, tuple[Scenario, float]] = {}
    for sc in scenarios:
        trace = _trace(sc)
        horizon = math.ceil(trace.duration_s) + 1.0
        levels = load_levels(trace, horizon)
        per.append((levels, horizon))
        for lv in np.unique(levels[levels > 0]):
            key = _level_key(sc, float(lv))
            if key not in cache:
                todo[key] = (sc, float(lv))
    calls = [(_level_job, (sc, lv), f"oracle {sc.label} at {lv:.3g} req/s") for sc, lv in todo.values()]
    for key, found in zip(todo, _parallel(calls, workers, on_done), strict=True):
        cache[key] = found
    if cache_file is not None:
        write_cache(cache_file, cache)
    out = []
    for sc, (levels, horizon) in zip(scenarios, per, strict=True):
        gpus = {float(lv): cache[_level_key(sc, float(lv))] for lv in np.unique(levels[levels > 0])}
        out.append(lower_bound(levels, gpus, horizon))
    return out


def run_matrix(
    scenarios: Sequence[Scenario],
    policies: Sequence[str] = POLICIES,
    *,
    workers: int = 0,
    on_done: Callable[[str], None] | None = None,
    bound: bool = True,
    cache_file: Path | None = None,
    sweep: Sequence[float] = (0.0,),
    sweep_policies: Sequence[str] = HEADROOM_POLICIES,
) -> list[dict[str, Any]]:
    """Every (scenario, policy) at headroom 0, and the ``HEADROOM_POLICIES`` at every other headroom of
    ``sweep``, in worker processes (``workers`` 0: the CPU count), after the oracle's lower bound of
    each scenario (``bound``). Output order is the input order whatever the completion order, so the
    report is deterministic."""
    workers = workers or (os.cpu_count() or 1)
    lbs = (
        lower_bounds(scenarios, workers=workers, cache_file=cache_file, on_done=on_done)
        if bound
        else [math.nan] * len(scenarios)
    )
    calls = [
        (_job, (sc, p, lb, h, fc), f"{sc.label} {p}{setting_label(h, fc)}")
        for sc, lb in zip(scenarios, lbs, strict=True)
        for p in policies
        for h, fc in run_settings(p, sweep, sweep_policies)
    ]
    return _parallel(calls, workers, on_done)


def run_headrooms(
    policy: str, sweep: Sequence[float], sweep_policies: Sequence[str] = HEADROOM_POLICIES
) -> list[float]:
    """The headrooms ``policy`` runs at: 0 (its default) and, for a planner with the knob that is to be
    swept, the sweep."""
    return sorted({0.0, *sweep}) if policy in HEADROOM_POLICIES and policy in sweep_policies else [0.0]


def run_settings(
    policy: str, sweep: Sequence[float], sweep_policies: Sequence[str] = HEADROOM_POLICIES
) -> list[tuple[float, bool]]:
    """(headroom, forecast) of every run of ``policy``: its headrooms with its defaults, and — when the
    operator policy is swept — also without its forecast over start-up, the cheapest setting it has (the
    forecast buys attainment on bursty load and costs GPU-hours on smooth load; the sweep is to show both
    ends of its cost curve, as headroom 0 is the model planner's cheapest)."""
    hs = run_headrooms(policy, sweep, sweep_policies)
    off = [(0.0, False)] if policy == "operator" and len(hs) > 1 else []
    return [*off, *((h, True) for h in hs)]


def setting_label(headroom: float, forecast: bool | None) -> str:
    """How a run's setting is named in progress lines and tables ("" for the default)."""
    parts = ([f"headroom {headroom:g}"] if headroom else []) + (["forecast off"] if forecast is False else [])
    return (" " + ", ".join(parts)) if parts else ""


def is_default(m: Mapping[str, Any]) -> bool:
    """The run at the policy's default settings (not a point of the sweep)."""
    return m["headroom"] == 0.0 and m.get("forecast") is not False


def _fmt(x: float | None, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:,.{nd}f}"


def sweep_points(ms: Sequence[dict[str, Any]]) -> dict[str, list[Point]]:
    """Per policy, its (headroom, attainment, GPU-hours, kWh released) points on one scenario."""
    out: dict[str, list[Point]] = {}
    for m in ms:
        point = Point(m["headroom"], m["slo_attainment"], m["gpu_hours"], m["energy_kwh_released"])
        out.setdefault(m["policy"], []).append(point)
    return out


def equal_attainment(ms: Sequence[dict[str, Any]]) -> Comparison | None:
    """operator against model on one scenario at the highest attainment both reach (≤ 99%)."""
    return compare(sweep_points(ms), "operator", "model")


def _by_scenario(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["metrics"]["scenario"], []).append(r["metrics"])
    return by


def summary_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per scenario: operator vs model at default settings and at equal attainment, and
    operator against the oracle."""
    out = [
        "| scenario | model GPU-h | operator GPU-h | operator/model | attainment model → operator | "
        "equal attainment | model GPU-h | operator GPU-h | operator/model | oracle GPU-h | "
        "operator ×oracle | kWh model → operator (default) | kWh model → operator (equal attainment) |",
        "|---|" + "---:|" * 12,
    ]
    for scen, ms in _by_scenario(rows).items():
        default = {m["policy"]: m for m in ms if is_default(m)}
        op, ref = default.get("operator"), default.get("model")
        if op is None or ref is None:
            continue
        eq = equal_attainment(ms)
        lb = op["lower_bound_gpu_hours"]
        tag = " (estimated)" if op["estimated"] else ""
        eq_cells = (
            f"{100 * eq.level:.1f}% | {eq.gpu_hours['model']:.2f} | {eq.gpu_hours['operator']:.2f} | "
            f"{eq.ratio:.2f}"
            if eq
            else "– | – | – | –"
        )
        out.append(
            f"| {scen}{tag} | {ref['gpu_hours']:.2f} | {op['gpu_hours']:.2f} | "
            f"{op['gpu_hours'] / ref['gpu_hours']:.2f} | "
            f"{100 * ref['slo_attainment']:.1f}% → {100 * op['slo_attainment']:.1f}% | {eq_cells} | "
            f"{_fmt(lb, 2)} | {_fmt(op['ratio_to_lower_bound'], 2)} | "
            f"{ref['energy_kwh_released']:.2f} → {op['energy_kwh_released']:.2f} | {_kwh_cell(eq)} |"
        )
    return out


def _kwh_cell(eq: Comparison | None) -> str:
    if eq is None or eq.kwh is None:
        return "–"
    return f"{eq.kwh['model']:.2f} → {eq.kwh['operator']:.2f}"


def markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    out = [
        f"Produced by `{command}`.",
        "",
        "SLO attained: share of the servable requests meeting both SLOs (unservable ones — no configuration "
        "serves them within the SLO — are their own column). p99 TBT: per request (a request's mean token "
        "gap, the wait for its second token included); TTST: time to the second token. ×oracle: GPU-hours "
        "over the oracle's lower bound; † marks a run under 99% attainment, whose GPU-hours are not "
        "comparable to the bound. Equal attainment: each planner's headroom swept, GPU-hours read at the "
        "highest attainment both reach, capped at 99% (opscale.sim.attainment). (estimated): the model's "
        "operators are priced from its published config, not profiled (opscale.model.estimate).",
        "",
        "#### Summary: operator vs model",
        "",
        *summary_table(rows),
        "",
    ]
    head = (
        "| policy | GPU-h | mean GPUs | peak GPUs | kWh (released) | kWh (idle kept) | SLO attained | "
        "unservable | p99 TTFT ms | p99 TBT ms | p99 TTST ms | rejected | actions | ×oracle |"
    )
    sep = "|---|" + "---:|" * 13
    # the default runs' whole rows (with their breakdown), by scenario and policy
    full = {(r["metrics"]["scenario"], r["metrics"]["policy"]): r for r in rows if is_default(r["metrics"])}
    for scen, every in _by_scenario(rows).items():
        ms = [m for m in every if is_default(m)]
        ref = next((m for m in ms if m["policy"] == "model"), None)
        lb = every[0]["lower_bound_gpu_hours"]
        bound = f"oracle lower bound {lb:.2f} GPU-h" if math.isfinite(lb) else "no lower bound computed"
        tag = "; operators estimated, not profiled" if every[0]["estimated"] else ""
        out += [f"#### {scen} ({every[0]['requests']:,} requests; {bound}{tag})", "", head, sep]
        for m in ms:
            out.append(_row(m))
        op = next((m for m in ms if m["policy"] == "operator"), None)
        if ref and op:
            out += ["", headline_sentence(op, ref)]
            r_op, r_ref = full[(scen, "operator")], full[(scen, "model")]
            if "breakdown" in r_op and "breakdown" in r_ref:  # results written before it have none
                out[-1] += " " + sentence(op, r_op["breakdown"], ref, r_ref["breakdown"])
        swept = [m for m in every if m["policy"] in HEADROOM_POLICIES]
        if len(swept) > len([m for m in ms if m["policy"] in HEADROOM_POLICIES]):
            out += [
                "",
                "| policy | setting | GPU-h | SLO attained | p99 TTFT ms | p99 TBT ms | kWh (released) |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
            for m in sorted(
                swept, key=lambda m: (m["policy"], m.get("forecast") is not False, m["headroom"])
            ):
                setting = setting_label(m["headroom"], m.get("forecast")).strip() or "default"
                out.append(
                    f"| {m['policy']} | {setting} | {m['gpu_hours']:.2f} | "
                    f"{100 * m['slo_attainment']:.1f}% | {_fmt(m['ttft_p99_ms'], 0)} | "
                    f"{_fmt(m['tbt_p99_ms'], 1)} | {_fmt(m['energy_kwh_released'], 2)} |"
                )
            eq = equal_attainment(every)
            if eq:
                out += ["", eq.sentence("operator", "model")]
        out.append("")
    return "\n".join(out)


def _row(m: dict[str, Any]) -> str:
    flag = "" if m["slo_attainment"] >= 0.99 else " †"
    return (
        f"| {m['policy']} | {_fmt(m['gpu_hours'], 2)} | {_fmt(m['mean_gpus'])} | {m['peak_gpus']} | "
        f"{_fmt(m['energy_kwh_released'], 2)} | {_fmt(m['energy_kwh_idle'], 2)} | "
        f"{100 * m['slo_attainment']:.1f}% | {m['unservable']} | {_fmt(m['ttft_p99_ms'], 0)} | "
        f"{_fmt(m['tbt_p99_ms'], 1)} | {_fmt(m['ttst_p99_ms'], 1)} | "
        f"{m['rejected']} | {m['actions']} | {_fmt(m['ratio_to_lower_bound'], 2)}{flag} |"
    )


def headline_sentence(op: dict[str, Any], ref: dict[str, Any]) -> str:
    dg = 1 - op["gpu_hours"] / ref["gpu_hours"] if ref["gpu_hours"] else float("nan")
    e_ref = ref["energy_kwh_released"]
    de = 1 - op["energy_kwh_released"] / e_ref if e_ref else float("nan")
    verb = "fewer" if dg >= 0 else "more"
    everb = "less" if de >= 0 else "more"
    return (
        f"operator vs model: {abs(100 * dg):.1f}% {verb} GPU-hours and {abs(100 * de):.1f}% {everb} "
        f"energy "
        f"(released), at {100 * op['slo_attainment']:.1f}% vs {100 * ref['slo_attainment']:.1f}% SLO "
        f"attainment."
    )


def write_reports(rows: Sequence[dict[str, Any]], out_dir: Path, command: str, *, plots: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"command": command, "runs": list(rows)}, indent=1))
    (out_dir / "results.md").write_text(markdown(rows, command))
    if plots:
        from opscale.sim.plots import plot_all, plot_attainment

        plot_all([r for r in rows if is_default(r["metrics"])], out_dir)
        plot_attainment(rows, out_dir)


def scenario_subset(
    scenarios: Sequence[Scenario], traces: Sequence[str] | None, models: Sequence[str] | None
) -> list[Scenario]:
    """The scenarios on one of ``traces`` for one of ``models`` (None or empty: any). A name the matrix
    does not hold, or a pair of them it has no scenario for, is an error, not an empty report."""
    for option, given, held in (
        ("--trace", traces, [s.trace for s in scenarios]),
        ("--model", models, [s.model for s in scenarios]),
    ):
        for name in given or ():
            if name not in held:
                known = ", ".join(dict.fromkeys(held))
                raise InvalidArgument(f"{option} {name!r}: this matrix holds {known}", field=option[2:])
    out = [s for s in scenarios if (not traces or s.trace in traces) and (not models or s.model in models)]
    if not out:
        raise InvalidArgument("no scenario of this matrix is on those traces for those models", field="trace")
    return out


def with_seed(scenarios: Sequence[Scenario], seed: int | None) -> list[Scenario]:
    return [replace(s, seed=seed) for s in scenarios] if seed is not None else list(scenarios)
