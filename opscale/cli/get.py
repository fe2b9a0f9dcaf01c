"""``opscale get nodes|gpus|deployments|replicas|decisions``: one line per object."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    CliConfigOpt,
    Client,
    ContextOpt,
    DecisionOpt,
    PlacementOpt,
    Service,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import handle_errors
from opscale.cli.output import (
    Format,
    OutputOpt,
    counts_label,
    emit,
    gib,
    gpus_of,
    ms,
    number,
    pool_label,
    table,
    when,
)
from opscale.wire.enums import MODE, NODE_STATUS, OUTCOME, REPLICA_DESIRED, REPLICA_OBSERVED

app = typer.Typer(help="List nodes, GPUs, deployments, replicas or decisions.", no_args_is_help=True)

PAGE_SIZE = 200
# Outcomes whose message says what placement could not do (placed N of M, and why).
UNPLACED = (dpb.PLACEMENT_OUTCOME_PARTIAL, dpb.PLACEMENT_OUTCOME_FAILED)
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="newest decisions to show")]


def list_all(
    client: Client, service: Service, method: Any, request_type: Any, items: str, **fields: Any
) -> list[Any]:
    """Every page of a paginated List call (``fields``: the request's filters)."""
    found: list[Any] = []
    token = ""
    while True:
        request = request_type(page=cpb.PageRequest(page_size=PAGE_SIZE, page_token=token), **fields)
        reply = client.call(service, method, request)
        found.extend(getattr(reply, items))
        token = reply.next_page_token
        if not token:
            return found


def node_gpus(node: ppb.Node) -> str:
    types = sorted({g.gpu_type for g in node.gpus})
    return f"{len(node.gpus)}× {'/'.join(types)}" if node.gpus else "0"


def topology(node: ppb.Node) -> str:
    t = node.topology
    return "/".join(part for part in (t.zone, t.s2, t.s1, t.s0) if part) or "-"


@app.command("nodes")
@handle_errors
def nodes_cmd(
    output: OutputOpt = Format.TABLE,
    placement: PlacementOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Nodes known to placement: status, GPUs, topology, last heartbeat."""
    with connect(config=opscale_config, context=context, placement=placement, timeout_s=timeout) as client:
        nodes = list_all(client, "placement", client.placement.ListNodes, ppb.ListNodesRequest, "nodes")
    t = table("NAME", "STATUS", "GPUS", "TOPOLOGY", "LAST HEARTBEAT", "AGENT", "VERSION")
    for n in nodes:
        t.add_row(
            n.name,
            NODE_STATUS.label(n.status),
            node_gpus(n),
            topology(n),
            when(n.last_heartbeat_ms),
            n.agent_version or "-",
            str(n.version),
        )
    emit(output, nodes, t if nodes else "No nodes.")


@app.command("gpus")
@handle_errors
def gpus_cmd(
    node: Annotated[str, typer.Option("--node", help="only this node's GPUs")] = "",
    gpu_type: Annotated[str, typer.Option("--gpu-type", help="only this GPU type, e.g. H100")] = "",
    output: OutputOpt = Format.TABLE,
    placement: PlacementOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """GPUs of every node (or one): type, memory, NVLink domain, replicas on it, utilization, power."""
    with connect(config=opscale_config, context=context, placement=placement, timeout_s=timeout) as client:
        gpus = list_all(
            client,
            "placement",
            client.placement.ListGpus,
            ppb.ListGpusRequest,
            "gpus",
            node=node,
            gpu_type=gpu_type,
        )
    t = table("NODE", "INDEX", "TYPE", "MEMORY", "NVLINK", "REPLICAS", "UTIL", "POWER")
    for g in gpus:
        tel = g.telemetry
        t.add_row(
            g.node,
            str(g.index),
            g.gpu_type,
            gib(g.memory_bytes),
            g.nvlink_domain or "-",
            ", ".join(g.replica_ids) or "-",
            f"{tel.utilization_fraction:.0%}" if tel.timestamp_ms else "-",
            f"{tel.power_watts:,.0f} W" if tel.timestamp_ms else "-",
        )
    emit(output, gpus, t if gpus else "No GPUs.")


@app.command("deployments")
@handle_errors
def deployments_cmd(
    output: OutputOpt = Format.TABLE,
    decision: DecisionOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Deployments: model, policy, mode, SLO, spec version, frozen."""
    with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
        found = list_deployments(client)
    t = table("NAME", "MODEL", "POLICY", "MODE", "GPU", "SLO TTFT/TBT", "VERSION", "FROZEN", "UPDATED")
    for d in found:
        s = d.spec
        t.add_row(
            s.name,
            s.model.name or s.model.preset or "(hf config)",
            s.policy_name,
            MODE.label(s.mode),
            s.gpu_type or "-",
            f"{number(s.slo.ttft_ms)}/{number(s.slo.tbt_ms)} ms @p{number(slo_percentile(s.slo))}",
            str(d.version),
            ("yes: " + d.frozen_reason if d.frozen_reason else "yes") if d.frozen else "no",
            when(d.updated_at_ms),
        )
    emit(output, found, t if found else "No deployments.")


def list_deployments(client: Client) -> list[dpb.Deployment]:
    return list_all(
        client, "decision", client.decision.ListDeployments, dpb.ListDeploymentsRequest, "deployments"
    )


def slo_percentile(slo: dpb.Slo) -> float:
    return slo.percentile if slo.HasField("percentile") else 99.0


@app.command("replicas")
@handle_errors
def replicas_cmd(
    deployment: Annotated[str, typer.Argument(help="deployment name (default: every deployment)")] = "",
    output: OutputOpt = Format.TABLE,
    placement: PlacementOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Replicas (of one deployment or all): pool, node and GPUs, desired vs observed state, restarts."""
    with connect(config=opscale_config, context=context, placement=placement, timeout_s=timeout) as client:
        replicas = list_all(
            client,
            "placement",
            client.placement.GetReplicas,
            ppb.GetReplicasRequest,
            "replicas",
            deployment=deployment,
        )
    emit(
        output,
        replicas,
        replicas_table(replicas) if replicas else f"No replicas for {deployment or 'any deployment'}.",
    )


def replicas_table(replicas: list[ppb.Replica]) -> Any:
    t = table(
        "ID",
        "DEPLOYMENT",
        "POOL",
        "NODE",
        "GPUS",
        "DESIRED",
        "OBSERVED",
        "GEN",
        "RESTARTS",
        "ENDPOINT",
        "MESSAGE",
    )
    for r in replicas:
        t.add_row(
            r.id,
            r.deployment,
            pool_label(r.pool),
            r.node or "-",
            ",".join(map(str, r.gpu_indices)) or "-",
            REPLICA_DESIRED.label(r.desired_state),
            REPLICA_OBSERVED.label(r.observed_state),
            str(r.generation),
            str(r.restarts),
            r.endpoint or "-",
            r.message or "",
        )
    return t


@app.command("decisions")
@handle_errors
def decisions_cmd(
    deployment: Annotated[str, typer.Argument(help="deployment name")],
    limit: LimitOpt = 20,
    output: OutputOpt = Format.TABLE,
    decision: DecisionOpt = None,
    context: ContextOpt = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """A deployment's decisions, newest first: pools, predicted latency, GPUs, placement outcome."""
    with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
        request = dpb.ListDecisionsRequest(deployment=deployment, page=cpb.PageRequest(page_size=limit))
        found = list(client.call("decision", client.decision.ListDecisions, request).decisions)[:limit]
    t = table(
        "ID", "TICK", "POLICY", "POOLS", "GPUS", "PRED TTFT", "PRED TBT", "FROZEN", "PLACEMENT", "WHY",
        no_wrap=["POOLS"],
    )  # fmt: skip
    for d in found:
        t.add_row(
            d.id,
            when(d.tick_ms),
            d.policy,
            counts_label(d.pools, "\n"),
            number(gpus_of(d.pools)),
            ms(d.prediction.ttft_ms),
            ms(d.prediction.tbt_ms),
            "yes" if d.frozen else "no",
            OUTCOME.label(d.placement_outcome),
            d.placement_message if d.placement_outcome in UNPLACED else "",
        )
    emit(output, found, t if found else f"No decisions for {deployment} yet.")


# kubectl habits: the singular works too (hidden, so help and docs list each command once).
app.command("node", hidden=True)(nodes_cmd)
app.command("gpu", hidden=True)(gpus_cmd)
app.command("deployment", hidden=True)(deployments_cmd)
app.command("replica", hidden=True)(replicas_cmd)
app.command("decision", hidden=True)(decisions_cmd)
