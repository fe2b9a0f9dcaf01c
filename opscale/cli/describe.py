"""``opscale describe deployment|node NAME``: everything about one object, as kubectl describe shows it."""

from __future__ import annotations

from typing import Annotated, Any

import grpc
import typer
import yaml
from rich.console import Group, RenderableType
from rich.text import Text

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    NO_DECISION_YET,
    CliConfigOpt,
    ContextOpt,
    DecisionOpt,
    PlacementOpt,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import handle_errors
from opscale.cli.get import node_gpus, replicas_table, topology
from opscale.cli.output import (
    Format,
    OutputOpt,
    emit,
    fields,
    gib,
    gpus_of,
    ms,
    number,
    plans_label,
    pool_label,
    table,
    when,
)
from opscale.wire.enums import NODE_STATUS, OUTCOME
from opscale.wire.spec_document import spec_document

app = typer.Typer(help="Show one deployment or node in detail.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="its name")]


def spec_yaml(spec: dpb.DeploymentSpec) -> str:
    """The spec as ``apply -f`` takes it (defaults included, so nothing is implicit)."""
    data = spec_document(spec)
    return yaml.safe_dump(data, sort_keys=False).rstrip()


def summary(reasons: list[str], deployment: str) -> str:
    if not reasons:
        return "-"
    more = f" (+{len(reasons) - 1} more: opscale explain {deployment})" if len(reasons) > 1 else ""
    return reasons[0] + more


def placed_label(decision: dpb.Decision, replicas: list[ppb.Replica] | None) -> str:
    """Per pool, how many of the decided replicas placement has put on GPUs and how many are ready:
    ``decode/attention 2 of 4 placed, 1 ready``; a pool short of its count is never hidden."""
    if replicas is None:
        return "unknown (placement unreachable)"
    running = ppb.REPLICA_DESIRED_STATE_RUNNING
    parts = []
    for plan in decision.pools:
        if not plan.replicas:
            continue  # a pool the plan leaves empty (e.g. decode/model when decode runs as operators)
        mine = [r for r in replicas if r.pool == plan.pool and r.desired_state == running]
        placed = sum(1 for r in mine if r.node)
        ready = sum(1 for r in mine if r.observed_state == ppb.REPLICA_OBSERVED_STATE_READY)
        parts.append(f"{pool_label(plan.pool)} {placed} of {plan.replicas} placed, {ready} ready")
    return ", ".join(parts) or "-"


def placement_label(decision: dpb.Decision) -> str:
    outcome = OUTCOME.label(decision.placement_outcome)
    return f"{outcome}: {decision.placement_message}" if decision.placement_message else outcome


def decision_block(decision: dpb.Decision | None, replicas: list[ppb.Replica] | None) -> RenderableType:
    if decision is None:
        return Text("Current decision: none yet")
    p = decision.prediction
    return fields(
        [
            ("Id", decision.id),
            ("Tick", when(decision.tick_ms)),
            ("Policy", f"{decision.policy} {decision.policy_version}".strip()),
            ("Pools", plans_label(decision.pools)),
            ("Previous", plans_label(decision.previous_pools)),
            ("GPUs", f"{number(gpus_of(decision.pools))} decided"),
            ("Placed", placed_label(decision, replicas)),
            ("Predicted", f"TTFT {ms(p.ttft_ms)}, TBT {ms(p.tbt_ms)}, {p.watts:,.0f} W"),
            ("Placement", placement_label(decision)),
            ("Reasons", summary(list(decision.reasons), decision.deployment)),
        ],
        title="Current decision",
    )


def shortfalls_block(shortfalls: list[ppb.PoolShortfall]) -> RenderableType:
    """Pools below their target for a reason placement knows (never silent: a pool at 0 of N says why)."""
    t = table("POOL", "READY", "SINCE", "REASON", title="Short of target", no_wrap=("POOL", "READY"))
    for s in shortfalls:
        t.add_row(pool_label(s.pool), f"{s.ready} of {s.target}", when(s.since_ms), s.reason)
    return t


# Replicas come from placement; if only placement is down, describe still shows the rest and says so.
PLACEMENT_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@app.command("deployment")
@handle_errors
def deployment_cmd(
    name: NameArg,
    output: OutputOpt = Format.TABLE,
    decision: DecisionOpt = None,
    placement: PlacementOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """A deployment: status, spec (as apply -f takes it), its current decision and its replicas."""
    with connect(
        config=opscale_config, context=context, decision=decision, placement=placement, timeout_s=timeout
    ) as client:
        get = dpb.GetDeploymentRequest(name=name)
        found = client.call("decision", client.decision.GetDeployment, get).deployment
        latest = dpb.GetDecisionRequest(deployment=name)
        reply = client.find("decision", client.decision.GetDecision, latest, NO_DECISION_YET)
        on = ppb.GetReplicasRequest(deployment=name)
        placed = client.find("placement", client.placement.GetReplicas, on, PLACEMENT_DOWN)
        placement_address = client.addresses["placement"]
    current = reply.decision if reply is not None else None
    replicas = list(placed.replicas) if placed is not None else None
    shortfalls = list(placed.shortfalls) if placed is not None else []
    frozen = ("yes: " + found.frozen_reason if found.frozen_reason else "yes") if found.frozen else "no"
    status = fields(
        [
            ("Name", found.spec.name),
            ("Version", found.version),
            ("Frozen", frozen),
            ("Created", when(found.created_at_ms)),
            ("Updated", when(found.updated_at_ms)),
        ]
    )
    if replicas is None:
        placed_view: RenderableType = Text(
            f"Replicas: unknown (placement at {placement_address} is unreachable)"
        )
    elif replicas:
        placed_view = Group(Text("Replicas", style="bold"), replicas_table(replicas))
    else:
        placed_view = Text("Replicas: none")
    if shortfalls:
        placed_view = Group(placed_view, Text(""), shortfalls_block(shortfalls))
    data: dict[str, Any] = {
        "deployment": found,
        "decision": current,
        "replicas": replicas,
        "shortfalls": shortfalls,
    }
    spec = Group(Text("Spec:", style="bold"), Text(spec_yaml(found.spec)))
    blank = Text("")
    emit(
        output, data, Group(status, blank, spec, blank, decision_block(current, replicas), blank, placed_view)
    )


@app.command("node")
@handle_errors
def node_cmd(
    name: NameArg,
    output: OutputOpt = Format.TABLE,
    placement: PlacementOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """A node: status, topology, labels, heartbeat, and every GPU with the replicas on it."""
    with connect(config=opscale_config, context=context, placement=placement, timeout_s=timeout) as client:
        node = client.call("placement", client.placement.GetNode, ppb.GetNodeRequest(name=name)).node
    head = fields(
        [
            ("Name", node.name),
            ("Status", NODE_STATUS.label(node.status)),
            ("GPUs", node_gpus(node)),
            ("Topology", topology(node)),
            ("NVLink domain", node.topology.nvlink_domain or "-"),
            ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-"),
            ("Registered", when(node.registered_at_ms)),
            ("Last heartbeat", when(node.last_heartbeat_ms)),
            ("Agent", node.agent_version or "-"),
            ("Version", node.version),
        ]
    )
    gpus = table("INDEX", "UUID", "TYPE", "MEMORY", "REPLICAS", "UTIL", "MEM USED", "POWER", title="GPUs")
    for g in node.gpus:
        tel = g.telemetry
        seen = bool(tel.timestamp_ms)
        gpus.add_row(
            str(g.index),
            g.uuid,
            g.gpu_type,
            gib(g.memory_bytes),
            ", ".join(g.replica_ids) or "-",
            f"{tel.utilization_fraction:.0%}" if seen else "-",
            gib(tel.memory_used_bytes) if seen else "-",
            f"{tel.power_watts:,.0f} W" if seen else "-",
        )
    emit(output, node, Group(head, Text(""), gpus))
