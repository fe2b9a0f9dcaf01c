"""PNG plots of an evaluation: per scenario, load; replicas per pool over time (operator and model); GPUs
over time for every policy; p99 TTFT and p99 TPOT per minute.

matplotlib is the ``plots`` extra, not a dependency of the services (their image has no plotting
libraries): ``pyplot()`` imports it when a plot is drawn, and says which extra to install when it is not.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opscale.errors import ConfigError

#: What to do about a missing matplotlib, for every command that draws plots.
PLOTS_EXTRA = "PNG plots need matplotlib, which is not installed: pip install 'opscale[plots]'"


def plots_available() -> bool:
    """Whether matplotlib is installed (without importing it: that takes a second)."""
    return importlib.util.find_spec("matplotlib") is not None


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; ``ConfigError`` naming the extra if absent."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise ConfigError(PLOTS_EXTRA) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def plot_all(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    plt = pyplot()
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["metrics"]["scenario"], []).append(r)
    paths = []
    for scen, runs in by.items():
        fig, ax = plt.subplots(5, 1, figsize=(10, 15), sharex=True)
        first = runs[0]["series"]
        step = first["step_s"]
        xs = [i * step / 60 for i in range(len(first["arrivals_rps"]))]
        ax[0].plot(xs, first["arrivals_rps"], color="black")
        ax[0].set_ylabel("arrivals (req/s)")
        ax[0].set_title(scen)
        for r in runs:
            pol = r["metrics"]["policy"]
            s = r["series"]
            ax[1].plot([i * step / 60 for i in range(len(s["gpus"]))], s["gpus"], label=pol)
            if pol in ("operator", "model"):
                target = ax[2]
                for pool, ys in s["replicas"].items():
                    target.plot(
                        [i * step / 60 for i in range(len(ys))],
                        ys,
                        label=f"{pol}: {pool}",
                        linestyle="-" if pol == "operator" else "--",
                    )
            mins = list(range(len(s["ttft_p99_ms_per_min"])))
            nan = float("nan")
            ax[3].plot(mins, [nan if v is None else v for v in s["ttft_p99_ms_per_min"]], label=pol)
            ax[4].plot(mins, [nan if v is None else v for v in s["tpot_p99_ms_per_min"]], label=pol)
        ax[1].set_ylabel("GPUs allocated")
        ax[1].legend(fontsize=8)
        ax[2].set_ylabel("replicas per pool")
        ax[2].legend(fontsize=6, ncol=2)
        ax[3].set_ylabel("p99 TTFT per minute (ms)")
        ax[3].set_yscale("log")
        ax[3].axhline(runs[0]["metrics"]["ttft_slo_ms"], color="grey", linestyle=":")
        ax[4].set_ylabel("p99 TPOT per minute (ms)")
        ax[4].set_yscale("log")
        ax[4].axhline(runs[0]["metrics"]["tbt_slo_ms"], color="grey", linestyle=":")
        ax[4].set_xlabel("minutes")
        for a in ax[3:]:
            a.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"{_slug(scen)}.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths


def plot_attainment(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per scenario, GPU-hours against SLO attainment for every run (the planners at each headroom of
    the sweep, joined along their frontier), with the oracle's GPU-hours at 99% as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opscale.sim.attainment import Point, frontier

    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["metrics"]["scenario"], []).append(r["metrics"])
    paths = []
    for scen, ms in by.items():
        fig, ax = plt.subplots(figsize=(7, 5))
        pols: dict[str, list[Point]] = {}
        for m in ms:
            pols.setdefault(m["policy"], []).append(Point(m["headroom"], m["slo_attainment"], m["gpu_hours"]))
        for pol, pts in pols.items():
            line = ax.plot([100 * p.attainment for p in pts], [p.gpu_hours for p in pts], "o", label=pol)
            f = frontier(pts)
            if len(f) > 1:
                ax.plot([100 * p.attainment for p in f], [p.gpu_hours for p in f], "-",
                        color=line[0].get_color())  # fmt: skip
        for m in ms:
            tag = (
                f"+{m['headroom']:g}"
                if m["headroom"]
                else ("forecast off" if m.get("forecast") is False else "")
            )
            if tag:
                ax.annotate(tag, (100 * m["slo_attainment"], m["gpu_hours"]), fontsize=7)
        lb = ms[0]["lower_bound_gpu_hours"]
        if lb == lb and lb > 0:  # not NaN
            ax.plot([99.0], [lb], "*", markersize=14, color="black", label="oracle (≥ 99%)")
        ax.axvline(99.0, color="grey", linestyle=":")
        ax.set_xlabel("SLO attainment (%)")
        ax.set_ylabel("GPU-hours")
        ax.set_title(scen + (" (estimated)" if ms[0]["estimated"] else ""), fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"attainment-{_slug(scen)}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
