"""The demo's live view (rich): load, replicas per operator pool, GPUs vs a model-level autoscaler,
TTFT/TBT p99 against the SLO, with the last minute of each as a sparkline. One renderable, rebuilt from
the timeline each second."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from opscale.demo.compare import SideBySide
from opscale.demo.replay import Second
from opscale.spec import DeploymentSpec

BARS = "▁▂▃▄▅▆▇█"
TREND_S = 60
OPERATOR_ORDER = {"embedding": 0, "attention": 1, "ffn": 2, "experts": 2, "lm_head": 3, "model": 0}


def pool_order(key: str) -> tuple[bool, int, str]:
    stage, _, op = key.partition("/")
    return stage != "prefill", OPERATOR_ORDER.get(op, 9), key


def spark(values: Sequence[float | None], top: float | None = None) -> str:
    """One character per value, scaled to ``top`` (default: the largest); missing values are blank."""
    present = [v for v in values if v is not None]
    hi = top if top is not None else max(present, default=0.0)
    if hi <= 0:
        return "".join(" " if v is None else BARS[0] for v in values)
    return "".join(
        " " if v is None else BARS[min(len(BARS) - 1, int(v / hi * (len(BARS) - 1) + 0.5))] for v in values
    )


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)


def _vs(value: float | None, slo: float) -> Text:
    if value is None:
        return Text("—", style="dim")
    style = "green" if value <= slo else "bold red"
    return Text(f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms", style=style)


def simulated_line(both: SideBySide | None, t_s: float) -> Text:
    """Both policies on this load through evaluate's code: GPUs at this second and over the replay."""
    if both is None:
        return Text("same load, both policies through opscale evaluate's simulator: running …", style="dim")
    op_now, ml_now = both.gpus_at(t_s)
    op, ml = both.operator.metrics, both.model.metrics
    line = Text.assemble(
        ("same load, simulated as in opscale evaluate: ", "bold"),
        ("operator ", "green"),
        (f"{op_now if op_now is not None else '—'} GPUs", "bold green"),
        f" ({op.gpu_hours:.2f} GPU-h, {100 * op.slo_attainment:.1f}% in SLO)  ",
        ("model ", "yellow"),
        (f"{ml_now if ml_now is not None else '—'} GPUs", "bold yellow"),
        f" ({ml.gpu_hours:.2f} GPU-h, {100 * ml.slo_attainment:.1f}% in SLO)",
    )
    eq = both.equal()
    if eq is not None:  # GPU-hours at different attainment do not compare; at the same they do
        line.append(
            f"; at {100 * eq.level:.1f}% in SLO (model-level's headroom swept): operator "
            f"{eq.gpu_hours['operator-level']:.2f} vs model {eq.gpu_hours['model-level']:.2f} GPU-h, "
            f"×{eq.ratio:.2f}",
            style="bold",
        )
    return line


def model_level(both: SideBySide | None) -> tuple[Callable[[Second], int | None], str]:
    """The model-level GPUs set beside operator-level's each second, and what they are. Once the
    simulated runs are in: model-level's run at no less than operator-level's attainment
    (``SideBySide.matched``), through evaluate's code. Until then: the model planner's raw plan for the
    load each decision saw (no stabilizer, no start-up), said so."""
    if both is None:
        return (lambda r: r.gpus_model_level), "model-level planner, same load (raw, until the runs are in)"
    run = both.matched()
    m = run.metrics
    label = (
        f"model-level simulated at ≥ operator-level's attainment (headroom {m.headroom:g}, "
        f"{100 * m.slo_attainment:.1f}% in SLO)"
    )
    return (lambda r: both.gpus_at(r.t_s, run)[1]), label


def render(
    spec: DeploymentSpec,
    rows: Sequence[Second],
    elapsed_s: float,
    duration_s: int,
    header: str,
    both: SideBySide | None = None,
) -> RenderableType:
    title = Text.assemble(
        ("opscale demo ", "bold"),
        (header, "cyan"),
        (f"   t={elapsed_s:.0f}/{duration_s} s", "bold"),
    )
    if not rows:
        return Panel(Text("starting: services, agent, deployment, warm-up …"), title=title)
    row = rows[-1]
    recent = rows[-TREND_S:]
    slo = spec.slo
    model_gpus, model_label = model_level(both)
    model = model_gpus(row)
    trend = Table.grid(padding=(0, 2))
    trend.add_column(style="bold", min_width=34)
    trend.add_column(style="cyan")
    trend.add_row(
        f"load {row.arrivals:>4} req/s  in flight {row.in_system:>4}",
        spark([float(r.arrivals) for r in recent]),
    )
    gpu_top = float(max([r.gpus_operator for r in recent] + [model_gpus(r) or 0 for r in recent]))
    trend.add_row(
        Text.assemble("GPUs operator-level ", (f"{row.gpus_operator:>3}", "bold green")),
        Text(spark([float(r.gpus_operator) for r in recent], gpu_top), style="green"),
    )
    trend.add_row(
        Text.assemble("GPUs model-level    ", ("  —" if model is None else f"{model:>3}", "bold yellow")),
        Text(spark([_f(model_gpus(r)) for r in recent], gpu_top), style="yellow"),
    )
    trend.add_row(
        Text.assemble(
            f"TTFT p{slo.percentile:g} ", _vs(row.ttft_p99_ms, slo.ttft_ms), f" ≤ {slo.ttft_ms:,.0f}"
        ),
        spark([r.ttft_p99_ms for r in recent], max(slo.ttft_ms, *(r.ttft_p99_ms or 0 for r in recent))),
    )
    trend.add_row(
        Text.assemble(f"TBT  p{slo.percentile:g} ", _vs(row.tbt_p99_ms, slo.tbt_ms), f" ≤ {slo.tbt_ms:,.0f}"),
        spark([r.tbt_p99_ms for r in recent], max(slo.tbt_ms, *(r.tbt_p99_ms or 0 for r in recent))),
    )
    tokens = Text(
        f"tokens/s: prompt {row.input_tokens:,} arriving, prefilled {row.prefill_tps:,.0f}; "
        f"decoded {row.decode_tps:,.0f}      latency sparklines scaled to max(SLO, observed)",
        style="dim",
    )
    diff = ""
    if model is not None:
        delta = row.gpus_operator - model
        diff = f"{delta:+d} GPUs vs model-level" if delta else "same GPUs as model-level"
    gpus = Text.assemble(
        ("GPUs in use ", "bold"),
        (f"{row.gpus_operator}", "bold green"),
        " (fake GPUs holding the operator replicas placement placed)   raw plan ",
        f"{row.gpus_plan_operator}",
        f"   {model_label}: ",
        ("—" if model is None else str(model), "bold yellow"),
        f"   ({diff})" if diff else "",
    )
    pools = Table(title="replicas per operator pool", header_style="bold", title_justify="left")
    for col in ("pool", "decided", "placed", "workers ready", "simulated"):
        pools.add_column(col, justify="left" if col == "pool" else "right")
    for key in sorted(row.sim_replicas, key=pool_order):
        decided = row.decided.get(key)
        ready = row.running.get(key, 0)
        pools.add_row(
            key,
            "—" if decided is None else str(decided),
            str(row.desired.get(key, 0)),
            Text(str(ready), style="green" if decided is not None and ready >= decided else "yellow"),
            str(row.sim_replicas.get(key, 0)),
        )
    foot = Text(
        f"decisions received over WatchDecisions: {row.decisions} (latest id {row.decision_id or '—'})"
        "   Ctrl-C stops and still writes the report",
        style="dim",
    )
    sim = simulated_line(both, row.t_s)
    why = Text(both.sentence(), style="dim") if both is not None else Text("")
    return Panel(Group(trend, tokens, gpus, sim, why, Text(""), pools, foot), title=title)
