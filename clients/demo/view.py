"""The demo's live view (rich): load, replicas per operator pool, GPUs vs a model-level autoscaler,
TTFT/TBT p99 against the SLO. One renderable, rebuilt from the latest timeline row each second."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from clients.demo.replay import Second
from opscale.spec import DeploymentSpec


def _vs(value: float | None, slo: float) -> Text:
    if value is None:
        return Text("—", style="dim")
    style = "green" if value <= slo else "bold red"
    return Text(f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms", style=style)


def render(
    spec: DeploymentSpec, row: Second | None, elapsed_s: float, duration_s: int, header: str
) -> RenderableType:
    title = Text.assemble(
        ("opscale demo ", "bold"),
        (header, "cyan"),
        (f"   t={elapsed_s:.0f}/{duration_s} s", "bold"),
    )
    if row is None:
        return Panel(Text("starting: services, agent, deployment …"), title=title)
    load = Table.grid(padding=(0, 2))
    load.add_row(
        Text(f"load {row.arrivals} req/s", style="bold"),
        f"in {row.input_tokens:,} tok/s",
        f"out {row.output_tokens:,} tok/s",
        f"decode {row.decode_tps:,.0f} tok/s",
        f"prefill {row.prefill_tps:,.0f} tok/s",
        f"in flight {row.in_system}",
    )
    slo = spec.slo
    lat = Table.grid(padding=(0, 2))
    lat.add_row(
        Text(f"p{slo.percentile:g} (last 10 s)", style="bold"),
        Text.assemble("TTFT ", _vs(row.ttft_p99_ms, slo.ttft_ms), f" / SLO {slo.ttft_ms:,.0f} ms"),
        Text.assemble("TBT ", _vs(row.tbt_p99_ms, slo.tbt_ms), f" / SLO {slo.tbt_ms:,.0f} ms"),
    )
    model = "—" if row.gpus_model_level is None else str(row.gpus_model_level)
    saving = ""
    if row.gpus_model_level and row.gpus_operator:
        saving = f"  ({1 - row.gpus_operator / row.gpus_model_level:+.0%} vs model-level)".replace("+-", "-")
    gpus = Text.assemble(
        ("GPUs in use ", "bold"),
        (f"{row.gpus_operator}", "bold green"),
        " (operator-level, placed)   ",
        f"plan {row.gpus_plan_operator} (whole GPUs per replica)   ",
        ("model-level autoscaler would use ", "bold"),
        (model, "bold yellow"),
        saving,
    )
    pools = Table(title="replicas per operator pool", expand=False, header_style="bold")
    for col in ("pool", "decided", "placed", "running (workers ready)", "simulated"):
        pools.add_column(col, justify="right" if col != "pool" else "left")
    for key in sorted(row.sim_replicas, key=lambda k: (not k.startswith("prefill"), k)):
        pools.add_row(
            key,
            str(row.decided.get(key, "—")),
            str(row.desired.get(key, 0)),
            str(row.running.get(key, 0)),
            str(row.sim_replicas.get(key, 0)),
        )
    foot = Text(
        f"decisions received {row.decisions}   latest {row.decision_id[:12] or '—'}   Ctrl-C stops",
        style="dim",
    )
    return Panel(Group(load, lat, gpus, Text(""), pools, foot), title=title)
