"""Operator actions: ``delete``, ``freeze``/``unfreeze`` a deployment; ``cordon``/``uncordon``/``drain`` a
node. Each prints one line saying what happened (or, with ``-o json|yaml``, the object as it is now)."""

from __future__ import annotations

from typing import Annotated

import typer

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    CliConfigOpt,
    ContextOpt,
    DecisionOpt,
    PlacementOpt,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import handle_errors
from opscale.cli.output import Format, OutputOpt, emit
from opscale.wire.enums import NODE_STATUS

ACTOR = "opscale-cli"

DeploymentArg = Annotated[str, typer.Argument(help="deployment name")]
NodeArg = Annotated[str, typer.Argument(help="node name")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why; recorded in the audit log")]
VersionOpt = Annotated[
    int, typer.Option("--expected-version", min=0, help="refuse unless this is the stored version (0: any)")
]


def register(app: typer.Typer) -> None:
    @app.command("delete")
    @handle_errors
    def delete_cmd(
        name: DeploymentArg,
        expected_version: VersionOpt = 0,
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Delete a deployment (its spec and control loop; --expected-version guards against races)."""
        request = dpb.DeleteDeploymentRequest(name=name, expected_version=expected_version, actor=ACTOR)
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            reply = client.call("decision", client.decision.DeleteDeployment, request)
        emit(output, reply, f"deployment/{reply.name} deleted (was version {reply.deleted_version})")

    @app.command("freeze")
    @handle_errors
    def freeze_cmd(
        name: DeploymentArg,
        reason: ReasonOpt = "",
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Hold a deployment's replica counts: decisions are still made and recorded, nothing changes."""
        request = dpb.FreezeDeploymentRequest(name=name, reason=reason, actor=ACTOR)
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            found = client.call("decision", client.decision.FreezeDeployment, request).deployment
        emit(output, found, f"deployment/{name} frozen (version {found.version})")

    @app.command("unfreeze")
    @handle_errors
    def unfreeze_cmd(
        name: DeploymentArg,
        output: OutputOpt = Format.TABLE,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Let the control loop change a frozen deployment's replicas again."""
        request = dpb.UnfreezeDeploymentRequest(name=name, actor=ACTOR)
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            found = client.call("decision", client.decision.UnfreezeDeployment, request).deployment
        emit(output, found, f"deployment/{name} unfrozen (version {found.version})")

    @app.command("cordon")
    @handle_errors
    def cordon_cmd(
        name: NodeArg,
        reason: ReasonOpt = "",
        expected_version: VersionOpt = 0,
        output: OutputOpt = Format.TABLE,
        placement: PlacementOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Stop placing new replicas on a node; the ones running there stay."""
        request = ppb.CordonNodeRequest(
            name=name, reason=reason, actor=ACTOR, expected_version=expected_version
        )
        with connect(
            config=opscale_config, context=context, placement=placement, timeout_s=timeout
        ) as client:
            node = client.call("placement", client.placement.CordonNode, request).node
        emit(output, node, f"node/{name} {NODE_STATUS.label(node.status)}")

    @app.command("uncordon")
    @handle_errors
    def uncordon_cmd(
        name: NodeArg,
        expected_version: VersionOpt = 0,
        output: OutputOpt = Format.TABLE,
        placement: PlacementOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Let placement use a cordoned node again."""
        request = ppb.UncordonNodeRequest(name=name, actor=ACTOR, expected_version=expected_version)
        with connect(
            config=opscale_config, context=context, placement=placement, timeout_s=timeout
        ) as client:
            node = client.call("placement", client.placement.UncordonNode, request).node
        emit(output, node, f"node/{name} {NODE_STATUS.label(node.status)}")

    @app.command("drain")
    @handle_errors
    def drain_cmd(
        name: NodeArg,
        reason: ReasonOpt = "",
        grace_s: Annotated[
            float, typer.Option("--grace-s", min=0, help="time in-flight work gets before replicas stop")
        ] = 0.0,
        output: OutputOpt = Format.TABLE,
        placement: PlacementOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Cordon a node, then move every replica on it elsewhere (start there, drain and stop here)."""
        request = ppb.DrainNodeRequest(name=name, reason=reason, actor=ACTOR, grace_s=grace_s)
        with connect(
            config=opscale_config, context=context, placement=placement, timeout_s=timeout
        ) as client:
            reply = client.call("placement", client.placement.DrainNode, request)
        status = NODE_STATUS.label(reply.node.status)
        emit(output, reply, f"node/{name} {status}: {reply.replicas_to_move} replica(s) to move")
