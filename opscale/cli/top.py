"""``opscale top``: a live view of every deployment's pools, load and SLOs, refreshed every few seconds.

It polls (ListDeployments, then GetDecision per deployment) rather than holding a WatchDecisions
stream: a poll has a deadline, shows deployments that have no decision yet, and notices a deployment
created after it started. On a terminal it redraws in place; piped, it prints one table (or, with
``-o json``, one JSON line; ``-o yaml``, one document) per refresh.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
import yaml
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    NO_DECISION_YET,
    CliConfigOpt,
    Client,
    ContextOpt,
    DecisionOpt,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import handle_errors
from opscale.cli.get import UNPLACED, list_deployments
from opscale.cli.output import (
    Format,
    OutputOpt,
    console,
    counts_label,
    gpus_of,
    number,
    plain,
    table,
    vs_slo,
    when,
)
from opscale.wire.enums import OUTCOME

Row = tuple[dpb.Deployment, dpb.Decision | None]


def snapshot(client: Client, names: list[str]) -> list[Row]:
    if names:
        deployments = [
            client.call(
                "decision", client.decision.GetDeployment, dpb.GetDeploymentRequest(name=n)
            ).deployment
            for n in names
        ]
    else:
        deployments = list_deployments(client)
    rows: list[Row] = []
    for d in deployments:
        request = dpb.GetDecisionRequest(deployment=d.spec.name)
        reply = client.find("decision", client.decision.GetDecision, request, NO_DECISION_YET)
        rows.append((d, reply.decision if reply is not None else None))
    return rows


def state(deployment: dpb.Deployment, decision: dpb.Decision | None) -> str:
    if decision is None:
        return "no decision yet"
    words = []
    if deployment.frozen:
        words.append("frozen")
    if decision.load.stale:
        words.append("stale signals")
    words.append(OUTCOME.label(decision.placement_outcome))
    return "\n".join(words)


def load_label(load: dpb.LoadSnapshot) -> str:
    """``12.5 req/s`` / ``512→256 tok`` / ``3,200 dec tok/s``: arrivals, mean lengths, decode rate."""
    return (
        f"{load.arrivals_per_s:,.1f} req/s\n"
        f"{load.input_tokens_mean:,.0f}→{load.output_tokens_mean:,.0f} tok\n"
        f"{load.decode_tokens_per_s:,.0f} dec tok/s"
    )


def render(rows: list[Row], address: str) -> RenderableType:
    # Multi-line cells keep it readable on an 80-column terminal.
    t = table(
        "DEPLOYMENT", "POLICY", "POOLS", "GPUS", "LOAD", "TTFT P99 / SLO", "TBT P99 / SLO", "STATE", "AT",
        no_wrap=("DEPLOYMENT", "POOLS", "LOAD"),
    )  # fmt: skip
    for d, decision in rows:
        slo = d.spec.slo
        if decision is None:
            policy = d.spec.policy_name
            idle = vs_slo(0, slo.ttft_ms), vs_slo(0, slo.tbt_ms)
            t.add_row(d.spec.name, policy, "-", "-", "-", *idle, state(d, None), "-")
            continue
        t.add_row(
            d.spec.name,
            decision.policy,
            counts_label(decision.pools, "\n"),
            number(gpus_of(decision.pools)),
            load_label(decision.load),
            vs_slo(decision.load.ttft_ms_p99, slo.ttft_ms),
            vs_slo(decision.load.tbt_ms_p99, slo.tbt_ms),
            state(d, decision),
            time.strftime("%H:%M:%S", time.gmtime(decision.tick_ms / 1000)),
        )
    header = Text(f"opscale top — decision at {address} — {when(int(time.time() * 1000))}", style="bold")
    # What placement could not do is said under the table, whole (a cell would cut it).
    short = [
        f"{d.spec.name}: placement {OUTCOME.label(x.placement_outcome)}: {x.placement_message}"
        for d, x in rows
        if x is not None and x.placement_outcome in UNPLACED and x.placement_message
    ]
    return Group(header, t if rows else Text("No deployments."), *(Text(line) for line in short))


def as_data(rows: list[Row]) -> list[dict[str, Any]]:
    return [{"deployment": plain(d), "decision": plain(decision)} for d, decision in rows]


def register(app: typer.Typer) -> None:
    @app.command("top")
    @handle_errors
    def top_cmd(
        deployments: Annotated[
            list[str] | None, typer.Argument(help="deployments to show (default: all)")
        ] = None,
        interval: Annotated[
            float, typer.Option("--interval", min=0.1, help="seconds between refreshes")
        ] = 2.0,
        iterations: Annotated[
            int, typer.Option("--iterations", "-n", min=0, help="refreshes before exiting (0: until Ctrl-C)")
        ] = 0,
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Live view of every deployment: pools, GPUs, load (req/s, tokens), TTFT/TBT p99 against the SLO."""
        names = list(deployments or [])
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            address = client.addresses["decision"]
            out = console()
            live: Live | None = None
            done = 0
            try:
                while True:
                    rows = snapshot(client, names)
                    if output is Format.TABLE and out.is_terminal:
                        if live is None:  # started after the first answer, so a failure is just one line
                            live = Live(console=out, auto_refresh=False)
                            live.start()
                        live.update(render(rows, address), refresh=True)
                    elif output is Format.TABLE:
                        out.print(render(rows, address))
                    elif output is Format.JSON:
                        sys.stdout.write(json.dumps(as_data(rows)) + "\n")
                    else:
                        sys.stdout.write(yaml.safe_dump(as_data(rows), sort_keys=False, explicit_start=True))
                    sys.stdout.flush()
                    done += 1
                    if iterations and done >= iterations:
                        return
                    time.sleep(interval)
            except KeyboardInterrupt:
                return  # Ctrl-C is how a live view is meant to end
            finally:
                if live is not None:
                    live.stop()
