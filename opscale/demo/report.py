"""The demo's outputs under ``--out``: ``timeline.json`` (one row per second plus the decisions),
``report.md`` (what ran, summary numbers, the plots) and four PNGs (with the ``plots`` extra:
matplotlib is imported only when they are drawn)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from opscale.demo.compare import PolicyRun, SideBySide
from opscale.demo.replay import ReplayState, Second
from opscale.demo.view import pool_order
from opscale.sim.plots import pyplot
from opscale.spec import DeploymentSpec


def write_timeline(
    out: Path, state: ReplayState, meta: dict[str, Any], both: SideBySide | None = None
) -> Path:
    path = out / "timeline.json"
    doc = {
        "meta": meta,
        "seconds": [asdict(r) for r in state.rows],
        "decisions": state.decision_log,
        "notes": state.notes,
        "simulated": None
        if both is None
        else {
            name: {
                "metrics": run.metrics.to_json(),
                "gpus": list(run.gpus),
                "mean_replicas": run.mean_replicas,
            }
            for name, run in (("operator", both.operator), ("model", both.model))
        }
        | {
            "model_sweep": [
                {"headroom": r.metrics.headroom, "metrics": r.metrics.to_json(), "gpus": list(r.gpus)}
                for r in both.model_sweep
            ]
        },
    }
    path.write_text(json.dumps(doc, indent=1))
    return path


def _nan(v: float | int | None) -> float:
    return math.nan if v is None else float(v)


def plot(out: Path, spec: DeploymentSpec, rows: list[Second], both: SideBySide | None = None) -> list[Path]:
    plt = pyplot()
    xs = [r.t_s for r in rows]
    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        p = out / name
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)

    fig, ax = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax[0].plot(xs, [r.arrivals for r in rows], color="black")
    ax[0].set_ylabel("arrivals (req/s)")
    ax[0].set_title(f"Load replayed ({spec.name}, {spec.model.preset or 'model'})")
    ax[1].plot(xs, [r.decode_tps for r in rows], label="decode tokens/s")
    ax[1].plot(xs, [r.prefill_tps for r in rows], label="prefill tokens/s")
    ax[1].set_ylabel("tokens/s")
    ax[1].set_xlabel("demo time (s)")
    ax[1].legend()
    save(fig, "load.png")

    pools = sorted({k for r in rows for k in r.sim_replicas}, key=pool_order)
    stages = sorted({k.partition("/")[0] for k in pools}, key=lambda st: st != "prefill")
    ops = sorted({k.partition("/")[2] for k in pools}, key=lambda op: pool_order(f"prefill/{op}"))
    # One panel per pool (rows: stages, columns: operators): pools at the same count would hide each
    # other on one axis.
    top = max([1] + [max(r.decided.get(k, 0), r.running.get(k, 0)) for r in rows for k in pools])
    fig, axes = plt.subplots(len(stages), len(ops), figsize=(3 * len(ops) + 1, 2.6 * len(stages) + 0.6),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    for i, stage in enumerate(stages):
        for j, op in enumerate(ops):
            a = axes[i][j]
            key = f"{stage}/{op}"
            a.step(xs, [r.decided.get(key, math.nan) for r in rows], where="post", label="decided", lw=2)
            a.step(xs, [r.running.get(key, 0) for r in rows], where="post", label="workers ready", ls=":")
            a.step(xs, [r.sim_replicas.get(key, 0) for r in rows], where="post", label="simulated", ls="--",
                   alpha=0.7)  # fmt: skip
            a.set_title(key, fontsize=10)
            a.set_ylim(0, top + 0.5)
            a.yaxis.get_major_locator().set_params(integer=True)
            if i == len(stages) - 1:
                a.set_xlabel("demo time (s)")
            if j == 0:
                a.set_ylabel("replicas")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Replicas per operator pool: decided (decision service), workers ready (agent), simulated")
    save(fig, "replicas.png")

    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.step(
        xs, [r.gpus_operator for r in rows], where="post", lw=2, label="operator-level: GPUs in use (placed)"
    )
    ax.step(xs, [r.gpus_plan_operator for r in rows], where="post", linestyle="--",
            label="operator policy's raw plan (before the stabilizer)")  # fmt: skip
    ax.step(xs, [_nan(r.gpus_model_level) for r in rows], where="post", lw=2,
            label="model-level planner, same load (raw)")  # fmt: skip
    if both is not None:
        runs: list[tuple[str, PolicyRun, Any]] = [
            ("operator-level", both.operator, "-."),
            ("model-level", both.model, ":"),
        ]
        matched = both.matched()
        if matched is not both.model:
            runs.append((f"model-level at headroom {matched.metrics.headroom:g}", matched, (0, (1, 3))))
        for name, run, style in runs:
            ax.step(range(1, len(run.gpus) + 1), run.gpus, where="post", ls=style, lw=1.5,
                    label=f"{name}, simulated ({100 * run.metrics.slo_attainment:.1f}% in SLO)")  # fmt: skip
    ax.set_ylabel("GPUs")
    ax.set_xlabel("demo time (s)")
    ax.set_ylim(bottom=0)
    ax.set_title("GPUs: operator-level (live) vs model-level (planned on the same windows)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8)
    save(fig, "gpus.png")

    fig, ax = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax[0].plot(xs, [_nan(r.ttft_p99_ms) for r in rows], label="TTFT p99 (last 10 s)")
    ax[0].axhline(spec.slo.ttft_ms, color="red", linestyle=":", label=f"SLO {spec.slo.ttft_ms:g} ms")
    ax[0].set_ylabel("TTFT (ms)")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[0].set_title("Latency against the SLO")
    ax[1].plot(xs, [_nan(r.tbt_p99_ms) for r in rows], label="TBT p99 (last 10 s)")
    ax[1].axhline(spec.slo.tbt_ms, color="red", linestyle=":", label=f"SLO {spec.slo.tbt_ms:g} ms")
    ax[1].set_ylabel("TBT (ms)")
    ax[1].set_xlabel("demo time (s)")
    ax[1].legend()
    save(fig, "latency.png")
    return paths


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _fmt(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:,.1f}{unit}"


def matched_row(both: SideBySide | None) -> list[str]:
    """The table row of model-level's simulated run at no less than operator-level's attainment."""
    if both is None:
        return []
    m = both.matched().metrics
    return [
        f"| mean GPUs, model-level simulated at ≥ operator-level's attainment (headroom {m.headroom:g}, "
        f"{100 * m.slo_attainment:.1f}% in SLO) | {m.mean_gpus:.1f} |"
    ]


def comparison_lines(both: SideBySide | None) -> list[str]:
    """The report's operator-vs-model section: both policies on the replayed load, as evaluate runs them."""
    head = ["## Operator vs model on the same load", ""]
    if both is None:
        return [*head, "The simulated comparison did not finish (see the notes).", ""]
    out = [
        *head,
        "Both policies replayed on the same window of the trace, at the same speed-up, by "
        "`opscale.sim.experiment.run_one` — the function behind every row of `opscale evaluate` (its "
        "fleet ceilings, not the demo's `--max-replicas`, and its data plane instead of the live services).",
        "",
        "| policy | GPU-h | mean GPUs | peak GPUs | kWh (released) | SLO attained | p99 TTFT ms | "
        "p99 TBT ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in (both.operator, both.model, *both.model_sweep):
        m = run.metrics
        label = m.policy + (f" (headroom {m.headroom:g})" if m.headroom else "")
        out.append(
            f"| {label} | {m.gpu_hours:.3f} | {m.mean_gpus:.1f} | {m.peak_gpus} | "
            f"{m.energy_kwh_released:.3f} | {100 * m.slo_attainment:.1f}% | {m.ttft_p99_ms:,.0f} | "
            f"{m.tbt_p99_ms:.1f} |"
        )
    return [*out, "", both.sentence(), ""]


def write_report(
    out: Path,
    spec: DeploymentSpec,
    state: ReplayState,
    meta: dict[str, Any],
    plots: list[Path],
    both: SideBySide | None = None,
) -> Path:
    rows = state.rows
    op = _mean([float(r.gpus_operator) for r in rows if r.gpus_operator])
    ml = _mean([float(r.gpus_model_level) for r in rows if r.gpus_model_level is not None])
    ttft_ok = [r.ttft_p99_ms <= spec.slo.ttft_ms for r in rows if r.ttft_p99_ms is not None]
    tbt_ok = [r.tbt_p99_ms <= spec.slo.tbt_ms for r in rows if r.tbt_p99_ms is not None]
    lines = [
        "# opscale demo report",
        "",
        f"Command: `{meta['command']}`  ",
        f"Started {meta['started']}, ran {len(rows)} s of {meta['duration_s']} s"
        f"{' (stopped early)' if meta.get('interrupted') else ''}.  ",
        f"Control plane: database `{meta['database']}`, counters `{meta['counters']}`; one agent "
        f"(`{meta['fake_gpus']}` fake GPUs) starting real `opscale worker` processes.  ",
        f"Trace: {meta['trace']} replayed {meta['speedup']:g}x faster; deployment `{spec.name}`: "
        f"{spec.model.preset} on {spec.gpu_type}, policy `{spec.policy}`, SLO TTFT p{spec.slo.percentile:g} "
        f"≤ {spec.slo.ttft_ms:g} ms, TBT ≤ {spec.slo.tbt_ms:g} ms.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests replayed | {sum(r.arrivals for r in rows):,} |",
        f"| mean load | {_fmt(_mean([float(r.arrivals) for r in rows]), ' req/s')} |",
        f"| decisions received (WatchDecisions) | {state.decisions} |",
        f"| mean GPUs in use, operator-level (placed) | {_fmt(op)} |",
        f"| mean GPUs the model planner's raw plan asks for, same load | {_fmt(ml)} |",
        *matched_row(both),
        f"| seconds with TTFT p99 within SLO | {sum(ttft_ok)}/{len(ttft_ok)} |",
        f"| seconds with TBT p99 within SLO | {sum(tbt_ok)}/{len(tbt_ok)} |",
        f"| worker processes left after the stop | {meta.get('leftover_workers', 0)} (killed) |",
        "",
        "How to read it: the data plane is the simulator's model, stepped once per wall-clock second "
        "and resized from the live decision stream; its samples reached the real ingest through the SDK. "
        '"GPUs in use" counts the distinct fake GPUs placement put the replicas on (operator replicas may '
        "share a GPU); the raw model-level figure is the `model` policy's planner (no stabilizer, no "
        "start-up) run in-process on the load each decision recorded, and the simulated one is the "
        "`model` policy run through `opscale evaluate`'s code at the setting that attains at least "
        "operator-level's share of requests in SLO. Latencies are those the simulated data plane "
        "produced under the live plan.",
        "",
        *comparison_lines(both),
    ]
    for p in plots:
        lines += [f"![{p.stem}]({p.name})", ""]
    if state.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in state.notes], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
