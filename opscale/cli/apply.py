"""``opscale apply -f spec.yaml``: create a deployment, or update it to the file's spec.

It also takes what ``get deployments -o yaml`` or ``describe deployment -o yaml`` printed (a list of
deployments, proto field and enum names), so ``opscale get deployments -o yaml | opscale apply -f -``
round-trips. The spec is validated here first (``opscale.spec.parse_spec``) so a typo is named before
anything is sent; the decision service validates again, since it cannot trust any client. An update
carries the version read just before it, so a change someone made in between is refused (ABORTED),
never overwritten.

Example spec::

    name: chat
    model: {preset: llama3-70b}
    gpu_type: H100
    mode: disaggregated
    policy: operator
    slo: {ttft_ms: 2000, tbt_ms: 100, percentile: 99}
    limits:
      - {pool: {stage: decode, operator: attention}, min_replicas: 1, max_replicas: 16}
      - {max_replicas: 32}
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    CliConfigOpt,
    Client,
    ContextOpt,
    DecisionOpt,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import handle_errors
from opscale.cli.output import Format, OutputOpt, emit
from opscale.errors import InvalidArgument
from opscale.spec import DeploymentSpec, parse_spec
from opscale.wire.spec_document import printed_spec
from opscale.wire.specs import spec_from_pb, spec_to_pb
from opscale.yamlio import YamlError, load_all

ACTOR = "opscale-cli"

FileOpt = Annotated[
    Path, typer.Option("--filename", "-f", help="YAML spec file ('-' reads stdin); several documents allowed")
]


def read_specs(path: Path) -> list[DeploymentSpec]:
    """Every YAML document in ``path``, validated; errors name the file, the document and the field."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}", field="filename") from None
    try:
        documents = [d for d in load_all(text) if d is not None]
    except YamlError as exc:
        raise InvalidArgument(f"{path}: {exc}", field="filename") from None
    # `get deployments -o yaml` prints one list of deployments: each is a document of its own.
    documents = [d for doc in documents for d in (doc if isinstance(doc, list) else [doc])]
    if not documents:
        raise InvalidArgument(f"{path}: no spec in the file", field="filename")
    specs = []
    for i, document in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path} (document {i + 1})"
        if not isinstance(document, dict):
            raise InvalidArgument(f"{where}: a spec is a mapping (name, model, slo, ...)", field="spec")
        try:
            specs.append(parse_spec(printed_spec(document, where) or document))
        except InvalidArgument as exc:
            message = exc.message if exc.message.startswith(where) else f"{where}: {exc.message}"
            raise InvalidArgument(message, field=exc.field) from None
    return specs


def apply_one(client: Client, spec: DeploymentSpec, dry_run: bool) -> tuple[str, dpb.Deployment | None]:
    """Create or update one deployment; returns what happened and the stored deployment."""
    current = client.find("decision", client.decision.GetDeployment, dpb.GetDeploymentRequest(name=spec.name))
    if current is None:
        if dry_run:
            return "would be created", None
        create = dpb.CreateDeploymentRequest(spec=spec_to_pb(spec), actor=ACTOR)
        return "created", client.call("decision", client.decision.CreateDeployment, create).deployment
    stored: dpb.Deployment = current.deployment
    if spec_from_pb(stored.spec) == spec:
        return "unchanged", stored
    if dry_run:
        return "would be configured", stored
    request = dpb.UpdateDeploymentRequest(spec=spec_to_pb(spec), expected_version=stored.version, actor=ACTOR)
    changed = (
        f"deployment {spec.name} was changed by someone else since version {stored.version} was read; "
        "check it (opscale describe deployment) and apply again"
    )
    reply = client.call(
        "decision", client.decision.UpdateDeployment, request, instead={grpc.StatusCode.ABORTED: changed}
    )
    return "configured", reply.deployment


def register(app: typer.Typer) -> None:
    @app.command("apply")
    @handle_errors
    def apply_cmd(
        filename: FileOpt,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="validate and compare; change nothing")
        ] = False,
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Create or update deployments from a YAML spec (name, model, gpu_type, policy, slo, limits...)."""
        specs = read_specs(filename)
        results: list[dict[str, Any]] = []
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            for spec in specs:
                outcome, stored = apply_one(client, spec, dry_run)
                results.append({"name": spec.name, "outcome": outcome, "deployment": stored})
                if output is Format.TABLE:
                    version = f" (version {stored.version})" if stored is not None else ""
                    emit(output, None, f"deployment/{spec.name} {outcome}{version}")
        if output is not Format.TABLE:
            emit(output, results)
