"""Rendering for the SRE commands: rich tables for people, ``-o json|yaml`` for scripts.

JSON and YAML are the protos as ``MessageToDict`` writes them with the proto field names and every field
present (zeros and ``false`` included), so a script never has to guess whether a key is missing or zero.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import typer
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.table import Table

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.wire.pools import pool_label as pool_label  # re-exported for the commands


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="table for people, json or yaml for scripts")
]

# Wide enough that no column is cut when the output is piped or captured (rich would use 80).
PIPE_WIDTH = 200


def console() -> Console:
    """A console on the *current* stdout (tests swap it), never wrapped when not a terminal."""
    out = Console(file=sys.stdout)
    if out.is_terminal:
        return out
    return Console(file=sys.stdout, width=PIPE_WIDTH, no_color=True, highlight=False)


def to_data(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def emit_data(data: Any, fmt: Format) -> None:
    """Print plain data as JSON or YAML."""
    if fmt is Format.JSON:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    sys.stdout.flush()


def emit(fmt: Format, data: Any, *renderables: RenderableType) -> None:
    """``data`` (a message, a list of messages, or plain data) for json/yaml; the renderables for a table."""
    if fmt is Format.TABLE:
        out = console()
        for item in renderables:
            out.print(item)
        return
    emit_data(plain(data), fmt)


def plain(data: Any) -> Any:
    if isinstance(data, Message):
        return to_data(data)
    if isinstance(data, Mapping):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [plain(v) for v in data]
    return data


def table(*columns: str, title: str | None = None, no_wrap: Iterable[str] = ()) -> Table:
    """Columns named in ``no_wrap`` keep each line whole (pool lists, names); the others fold."""
    keep = set(no_wrap)
    t = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for column in columns:
        t.add_column(column, overflow="fold", no_wrap=column in keep)
    return t


def fields(rows: Sequence[tuple[str, object]], title: str | None = None) -> Table:
    """A two-column 'Name: value' block, as kubectl describe prints it."""
    t = Table.grid(padding=(0, 2))
    t.title = title
    t.title_justify = "left"
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for name, value in rows:
        t.add_row(f"{name}:", str(value))
    return t


# --- readable values ---------------------------------------------------------------------------------------


def plan_label(plan: cpb.PoolPlan) -> str:
    """``decode/model 4×1 GPU @32`` — replicas × GPUs per replica @ batch size."""
    text = f"{pool_label(plan.pool)} {plan.replicas}"
    if plan.gpus_per_replica:
        text += f"×{plan.gpus_per_replica}"
    if plan.batch_size:
        text += f" @{plan.batch_size}"
    if plan.draining_replicas:
        text += f" (+{plan.draining_replicas} draining)"
    return text


def plans_label(plans: Iterable[cpb.PoolPlan]) -> str:
    return ", ".join(plan_label(p) for p in plans) or "-"


def counts_label(plans: Iterable[cpb.PoolPlan], sep: str = ", ") -> str:
    return sep.join(f"{pool_label(p.pool)} {p.replicas}" for p in plans) or "-"


def gpus_of(plans: Iterable[cpb.PoolPlan]) -> float:
    """GPUs the plans occupy; a replica on a share of one GPU counts as that share."""
    return sum(
        p.replicas * max(p.gpus_per_replica, 1) * (p.gpu_share if 0 < p.gpu_share < 1 else 1) for p in plans
    )


def number(value: float, digits: int = 1) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def ms(value: float) -> str:
    return f"{value:,.1f} ms" if value else "-"


def gib(value_bytes: int) -> str:
    return f"{value_bytes / 1024**3:,.0f} GiB" if value_bytes else "-"


def when(at_ms: int) -> str:
    """``2026-11-22 15:04:05Z`` (UTC), or ``-`` when unset."""
    if not at_ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at_ms / 1000))


def vs_slo(value_ms: float, slo_ms: float) -> str:
    """``812.0 / 2,000 ms ok`` — a value against its SLO, and whether it meets it."""
    if not value_ms:
        return f"- / {number(slo_ms)} ms" if slo_ms else "-"
    if not slo_ms:
        return ms(value_ms)
    verdict = "ok" if value_ms <= slo_ms else "MISS"
    return f"{value_ms:,.1f} / {number(slo_ms)} ms {verdict}"
