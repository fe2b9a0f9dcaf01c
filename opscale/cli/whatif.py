"""``opscale what-if DEPLOYMENT --rps R --input-tokens I --output-tokens O``: what each policy would decide
for a steady hypothetical load, side by side. Asks the decision service (WhatIf), so it uses the same
models and presets as the running control plane, remote or not; nothing is recorded or applied."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.apply import read_specs
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
    gpus_of,
    number,
    plans_label,
    pool_label,
    table,
    vs_slo,
)
from opscale.errors import InvalidArgument
from opscale.policy.registry import names
from opscale.wire.specs import spec_to_pb

# Per-pool detail lines ("decode/ffn: 2 replicas × 2 GPUs ..."): `opscale what-if -o yaml` has them all;
# the table keeps the plan-level reasons (the plan, each stage's verdict, packing) so it stays readable.
PER_POOL = re.compile(r"^[a-z_]+/[a-z_]+: ")


def side_by_side(reply: dpb.WhatIfResponse, slo: dpb.Slo, load: dpb.HypotheticalLoad) -> RenderableType:
    t = table(
        "POLICY", "GPUS", "POOLS (replicas×GPUs @batch)", "TTFT vs SLO", "TBT vs SLO", "WATTS", "REASONS"
    )
    for plan in reply.plans:
        p = plan.prediction
        reasons = [r for r in plan.reasons if not PER_POOL.match(r)]
        reasons += [f"infeasible {pool_label(i.pool)}: {i.reason}" for i in plan.infeasible]
        t.add_row(
            plan.policy_name,
            number(p.gpus) if p.gpus else number(gpus_of(plan.pools)),
            plans_label(plan.pools),
            vs_slo(p.ttft_ms, slo.ttft_ms),
            vs_slo(p.tbt_ms, slo.tbt_ms),
            f"{p.watts:,.0f} W" if p.watts else "-",
            "\n".join(reasons) or "-",
        )
    percentile = number(slo.percentile) if slo.HasField("percentile") else "99"
    title = (
        f"What if: {number(load.requests_per_s)} req/s, {number(load.input_tokens)} tokens in, "
        f"{number(load.output_tokens)} out (SLO at p{percentile})"
    )
    return Group(Text(title, style="bold"), t)


def register(app: typer.Typer) -> None:
    @app.command("what-if")
    @handle_errors
    def what_if_cmd(
        rps: Annotated[float, typer.Option("--rps", help="requests per second")],
        input_tokens: Annotated[float, typer.Option("--input-tokens", help="mean prompt tokens")],
        output_tokens: Annotated[float, typer.Option("--output-tokens", help="mean generated tokens")],
        deployment: Annotated[
            str, typer.Argument(help="deployment name (or give -f)", show_default=False)
        ] = "",
        policy: Annotated[
            list[str] | None,
            typer.Option(
                "--policy",
                "-p",
                help=f"policy to compare: {', '.join(names())} (repeat; default: the deployment's own)",
            ),
        ] = None,
        filename: Annotated[
            Path | None, typer.Option("--filename", "-f", help="a spec file instead of a deployment")
        ] = None,
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Compare the policies' plans for a hypothetical steady load: GPUs, pools, latency vs SLO, watts."""
        if bool(deployment) == (filename is not None):
            raise InvalidArgument("give a deployment name or -f spec.yaml (one of them)", field="deployment")
        load = dpb.HypotheticalLoad(
            requests_per_s=rps, input_tokens=input_tokens, output_tokens=output_tokens
        )
        kinds = list(policy or [])
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            if filename is not None:
                spec = spec_to_pb(read_specs(filename)[0])
                request = dpb.WhatIfRequest(spec=spec, load=load, policy_names=kinds)
            else:
                get = dpb.GetDeploymentRequest(name=deployment)
                spec = client.call("decision", client.decision.GetDeployment, get).deployment.spec
                request = dpb.WhatIfRequest(deployment=deployment, load=load, policy_names=kinds)
            reply = client.call("decision", client.decision.WhatIf, request)
        emit(output, reply, side_by_side(reply, spec.slo, load))
