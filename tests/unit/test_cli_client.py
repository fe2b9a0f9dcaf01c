"""The CLI's plumbing without services: the one gRPC-status → message/exit path, address resolution
(flag > context > defaults), the contexts file's validation, spec files, and the readable values."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import typer

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.cli.apply import read_specs
from opscale.cli.client import DEFAULT_ADDRESSES, CliConfig, Client, connect, describe_rpc_error
from opscale.cli.exit_codes import ExitCode, exit_for_status
from opscale.cli.output import plan_label, pool_label, vs_slo
from opscale.errors import InvalidArgument
from opscale.wire.enums import NODE_STATUS


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_every_status_has_an_exit_code_and_a_one_line_message(code: grpc.StatusCode) -> None:
    assert isinstance(exit_for_status(code), ExitCode)
    message = describe_rpc_error("decision", "h:1", code, "node 'x' not found", 10)
    assert "\n" not in message and message


def test_messages_name_the_service_and_address_when_it_cannot_answer() -> None:
    down = describe_rpc_error("placement", "10.0.0.7:50063", grpc.StatusCode.UNAVAILABLE, "refused", 10)
    assert down == "cannot reach placement at 10.0.0.7:50063 (refused)"
    # The service answered, but something it needs is down: say so rather than "cannot reach".
    busy = describe_rpc_error(
        "decision", "h:1", grpc.StatusCode.UNAVAILABLE, "database unavailable", 10, connected=True
    )
    assert busy == "decision at h:1 is unavailable: database unavailable"
    slow = describe_rpc_error("decision", "h:1", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 2.5)
    assert slow == "decision at h:1 did not answer within 2.5s"
    # Caller mistakes pass the service's own message (which names the field) through unchanged.
    bad = describe_rpc_error("decision", "h:1", grpc.StatusCode.INVALID_ARGUMENT, "spec.slo.ttft_ms: > 0", 10)
    assert bad == "spec.slo.ttft_ms: > 0"
    assert (
        exit_for_status(grpc.StatusCode.UNAVAILABLE) is ExitCode.UNAVAILABLE
        and int(ExitCode.UNAVAILABLE) == 6
    )
    assert exit_for_status(grpc.StatusCode.DEADLINE_EXCEEDED) == ExitCode.UNAVAILABLE


def test_addresses_flag_beats_context_beats_defaults(tmp_path: Path) -> None:
    config = tmp_path / "cli.yaml"
    assert connect(config=config, context=None).addresses == DEFAULT_ADDRESSES
    config.write_text(
        "current-context: prod\n"
        "contexts:\n  prod: {decision: 'd:1'}\n  dr: {placement: 'p:2', ingest: 'i:3'}\n"
    )
    prod = connect(config=config, context=None).addresses
    assert prod == {**DEFAULT_ADDRESSES, "decision": "d:1"}
    dr = connect(config=config, context="dr").addresses
    assert dr == {"decision": DEFAULT_ADDRESSES["decision"], "placement": "p:2", "ingest": "i:3"}
    flagged = connect(config=config, context="dr", decision="x:9", placement="y:8").addresses
    assert (flagged["decision"], flagged["placement"]) == ("x:9", "y:8")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contexts: [unclosed\n", "cannot read"),
        ("- a\n- b\n", "expected a mapping"),
        ("contexts: {prod: 'd:1'}\n", "contexts must map each name"),
        ("contexts: {prod: {decsion: 'd:1'}}\n", "unknown key 'decsion'"),
    ],
)
def test_bad_contexts_files_are_usage_errors_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(text)
    with pytest.raises(typer.Exit) as info:
        CliConfig.load(config)
    assert info.value.exit_code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_contexts_round_trip_and_unknown_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = CliConfig(tmp_path / "sub" / "cli.yaml", {"prod": {"decision": "d:1"}}, "prod")
    config.save()
    loaded = CliConfig.load(config.path)
    assert (loaded.contexts, loaded.current) == ({"prod": {"decision": "d:1"}}, "prod")
    with pytest.raises(typer.Exit):
        loaded.context("staging")
    err = capsys.readouterr().err
    assert "no context 'staging'" in err and "known: prod" in err


def test_client_opens_one_channel_per_service_and_closes_them() -> None:
    with Client(dict(DEFAULT_ADDRESSES)) as client:
        assert client.channel("decision") is client.channel("decision")
        assert client.channel("placement") is not client.channel("decision")
    assert not client._channels


def test_spec_files_several_documents_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    one = "name: {}\nmodel: {{preset: llama3-8b}}\nslo: {{ttft_ms: 1000, tbt_ms: 100}}\n"
    path.write_text(one.format("a") + "---\n" + one.format("b"))
    assert [s.name for s in read_specs(path)] == ["a", "b"]
    path.write_text(one.format("a") + "---\n" + one.format("B!"))
    with pytest.raises(InvalidArgument) as info:
        read_specs(path)
    assert "(document 2)" in info.value.message and "spec.name" in info.value.message
    assert info.value.field == "spec.name"


def test_readable_values() -> None:
    assert NODE_STATUS.label(ppb.NODE_STATUS_CORDONED) == "cordoned"
    assert NODE_STATUS.label(99) == "99"
    decode = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_FFN)
    assert pool_label(decode) == "decode/ffn"
    plan = cpb.PoolPlan(pool=decode, replicas=3, gpus_per_replica=2, batch_size=64, draining_replicas=1)
    assert plan_label(plan) == "decode/ffn 3×2 @64 (+1 draining)"
    assert vs_slo(812, 2000) == "812.0 / 2,000 ms ok"
    assert vs_slo(120.5, 100) == "120.5 / 100 ms MISS"
    assert vs_slo(0, 100) == "- / 100 ms"


@pytest.mark.parametrize(
    "module",
    ["client", "output", "get", "describe", "apply", "control", "explain", "whatif", "top", "contexts"],
)
def test_sre_commands_read_the_environment_only_through_typer(module: str) -> None:
    # Addresses come from flags whose envvar= Typer resolves; nothing here reads os.environ directly.
    source = (Path(__file__).resolve().parents[2] / "opscale" / "cli" / f"{module}.py").read_text()
    assert "os.environ" not in source and "getenv" not in source


def test_describe_says_how_many_of_the_decided_replicas_are_placed() -> None:
    from opscale.api.decision.v1 import decision_pb2 as dpb
    from opscale.cli.describe import placed_label, placement_label

    attn = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_ATTENTION)
    ffn = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_FFN)
    decision = dpb.Decision(
        pools=[cpb.PoolPlan(pool=attn, replicas=4), cpb.PoolPlan(pool=ffn, replicas=1)],
        placement_outcome=dpb.PLACEMENT_OUTCOME_PARTIAL,
        placement_message="decode/attention placed 2 of 4: no room",
    )
    running, draining = ppb.REPLICA_DESIRED_STATE_RUNNING, ppb.REPLICA_DESIRED_STATE_DRAINING
    ready = ppb.REPLICA_OBSERVED_STATE_READY
    replicas = [
        ppb.Replica(pool=attn, node="gpu-0", desired_state=running, observed_state=ready),
        ppb.Replica(pool=attn, node="gpu-0", desired_state=running),
        ppb.Replica(pool=attn, node="gpu-0", desired_state=draining, observed_state=ready),  # leaving
        ppb.Replica(pool=ffn, node="", desired_state=running),  # recorded, not on a GPU
    ]
    assert placed_label(decision, replicas) == (
        "decode/attention 2 of 4 placed, 1 ready, decode/ffn 0 of 1 placed, 0 ready"
    )
    assert placed_label(decision, None) == "unknown (placement unreachable)"
    assert placement_label(decision) == "partial: decode/attention placed 2 of 4: no room"


def test_top_says_what_placement_could_not_place() -> None:
    import io

    from rich.console import Console

    from opscale.api.decision.v1 import decision_pb2 as dpb
    from opscale.cli.top import render

    deployment = dpb.Deployment(spec=dpb.DeploymentSpec(name="chat"))
    short = dpb.Decision(
        deployment="chat",
        placement_outcome=dpb.PLACEMENT_OUTCOME_PARTIAL,
        placement_message="decode/attention placed 2 of 4: no room on any node",
    )
    out = io.StringIO()
    Console(file=out, width=200).print(render([(deployment, short)], "h:1"))
    assert "chat: placement partial: decode/attention placed 2 of 4: no room on any node" in out.getvalue()
    fine = dpb.Decision(
        deployment="chat", placement_outcome=dpb.PLACEMENT_OUTCOME_APPLIED, placement_message="ok"
    )
    out = io.StringIO()
    Console(file=out, width=200).print(render([(deployment, fine)], "h:1"))
    assert "placement applied" not in out.getvalue()
