"""``opscale explain DEPLOYMENT [DECISION_ID]``: why a decision came out as it did — the load it saw,
the model's per-pool estimates, the policy's reasons, what the stabilizer changed, and what placement
did with it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    CliConfigOpt,
    ContextOpt,
    DecisionOpt,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import handle_errors
from opscale.cli.output import (
    Format,
    OutputOpt,
    emit,
    fields,
    gib,
    gpus_of,
    ms,
    number,
    plan_label,
    pool_label,
    table,
    when,
)
from opscale.wire.enums import OUTCOME


def inputs(load: dpb.LoadSnapshot) -> RenderableType:
    if not load.stale:
        stale = "no"
    elif load.max_staleness_s < 0:
        stale = "yes (some signals were never reported)"
    else:
        stale = f"yes (oldest signal {load.max_staleness_s:,.1f} s old)"
    return fields(
        [
            ("Window", f"{number(load.window_s)} s"),
            ("Arrivals", f"{load.arrivals_per_s:,.2f} req/s"),
            ("Tokens in / out", f"{load.input_tokens_mean:,.0f} / {load.output_tokens_mean:,.0f} (mean)"),
            ("Prefill / decode", f"{load.prefill_tokens_per_s:,.0f} / {load.decode_tokens_per_s:,.0f} tok/s"),
            ("TTFT / TBT p99", f"{ms(load.ttft_ms_p99)} / {ms(load.tbt_ms_p99)}"),
            ("GPU utilization", f"{load.gpu_utilization_fraction:.0%}"),
            ("Stale", stale),
        ],
        title="Inputs",
    )


def estimates(rows: list[dpb.PoolEstimate]) -> RenderableType:
    t = table(
        "POOL", "ARRIVALS/S", "SERVICE", "UTIL", "QUEUE WAIT", "LATENCY", "MEMORY/REPLICA", title="Model"
    )
    for e in rows:
        t.add_row(
            pool_label(e.pool),
            f"{e.arrival_rate_per_s:,.2f}",
            ms(e.service_time_ms),
            f"{e.utilization:.0%}",
            ms(e.queue_wait_ms),
            ms(e.latency_ms),
            gib(int(e.memory_bytes_per_replica)),
        )
    return t if rows else Text("Model: no per-pool estimates")


def pools(decision: dpb.Decision) -> RenderableType:
    before = {(p.pool.stage, p.pool.operator): p for p in decision.previous_pools}
    t = table("POOL", "BEFORE", "AFTER", "PRED LATENCY", "PRED WATTS", title="Decision")
    for p in decision.pools:
        prev = before.get((p.pool.stage, p.pool.operator))
        t.add_row(
            pool_label(p.pool),
            str(prev.replicas) if prev is not None else "-",
            plan_label(p).removeprefix(pool_label(p.pool) + " "),
            ms(p.predicted_latency_ms),
            f"{p.predicted_watts:,.0f} W" if p.predicted_watts else "-",
        )
    return t


def effects(rows: list[dpb.StabilizerEffect]) -> RenderableType:
    if not rows:
        return Text("Stabilizer: no changes to the policy's recommendation")
    t = table("POOL", "RAW", "STABILIZED", "RULE", "REASON", title="Stabilizer")
    for e in rows:
        t.add_row(pool_label(e.pool), str(e.raw_replicas), str(e.stabilized_replicas), e.rule, e.reason)
    return t


def infeasible(rows: list[cpb.Infeasibility]) -> RenderableType:
    t = table("POOL", "REQUESTED", "SATISFIABLE", "REASON", title="Infeasible")
    for i in rows:
        # Stale signals (and other deployment-wide findings) name no pool and no counts.
        whole = not i.pool.stage and not i.pool.operator
        counts = (
            ("-", "-")
            if whole and not (i.requested or i.satisfiable)
            else (str(i.requested), str(i.satisfiable))
        )
        t.add_row("(deployment)" if whole else pool_label(i.pool), *counts, i.reason)
    return t


def prediction(d: dpb.Decision) -> str:
    """The policy's prediction, and whether it is for the decided counts: the stabilizer may have held
    them elsewhere (fail-static, cooldown, frozen), and then the prediction is for a plan not running."""
    p = d.prediction
    latency = f"TTFT {ms(p.ttft_ms)}, TBT {ms(p.tbt_ms)} at p{number(p.percentile)}"
    if not p.gpus:
        return latency
    plan = f"{number(p.gpus)} GPUs, {p.watts:,.0f} W"
    decided = gpus_of(d.pools)
    if abs(p.gpus - decided) < 1e-6:
        return f"{latency}; {plan}"
    return f"{latency} for the policy's plan ({plan}), not for the {number(decided)} GPUs decided"


def bullets(title: str, lines: list[str]) -> RenderableType:
    return Text("\n".join([title + ":", *(f"  - {line}" for line in lines)]) if lines else f"{title}: -")


def render(reply: dpb.ExplainDecisionResponse) -> RenderableType:
    d = reply.decision
    head = fields(
        [
            ("Decision", d.id),
            ("Deployment", f"{d.deployment} (spec version {d.spec_version})"),
            ("Tick", when(d.tick_ms)),
            ("Policy", f"{d.policy} {d.policy_version}".strip()),
            ("Leader", d.leader_id or "-"),
            ("Frozen", "yes" if d.frozen else "no"),
            ("GPUs", f"{number(gpus_of(d.pools))} decided"),
            ("Predicted", prediction(d)),
        ]
    )
    outcome = OUTCOME.label(d.placement_outcome)
    placement = f"Placement: {outcome}" + (f" — {d.placement_message}" if d.placement_message else "")
    parts: list[RenderableType] = [head, inputs(d.load), estimates(list(reply.estimates)), pools(d)]
    parts += [bullets("Reasons", list(d.reasons)), effects(list(d.stabilizer_effects))]
    if d.infeasible:
        parts.append(infeasible(list(d.infeasible)))
    parts.append(Text(placement))
    spaced: list[RenderableType] = []
    for part in parts:
        spaced += [part, Text("")]
    return Group(*spaced[:-1])


def register(app: typer.Typer) -> None:
    @app.command("explain")
    @handle_errors
    def explain_cmd(
        deployment: Annotated[str, typer.Argument(help="deployment name")],
        decision_id: Annotated[str, typer.Argument(help="decision id (default: the current one)")] = "",
        narrative: Annotated[
            bool, typer.Option("--narrative", help="print the service's plain-language account instead")
        ] = False,
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Why a decision: inputs, model estimates, reasons, stabilizer effects, what placement did."""
        request = dpb.ExplainDecisionRequest(deployment=deployment, decision_id=decision_id)
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            reply = client.call("decision", client.decision.ExplainDecision, request)
        if narrative and output is Format.TABLE:
            emit(output, None, Text("\n".join(reply.narrative)))
            return
        emit(output, reply, render(reply))
