"""`opscale apply/get/describe/freeze/unfreeze/delete` against a real decision service, on both backend
pairs: tables for people, JSON/YAML for scripts, and the error paths (invalid spec naming the field,
not found, stale version, a change made between apply's read and its write)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.apply import apply_one, read_specs
from opscale.cli.client import Client
from opscale.services.runtime import Runtime
from opscale.spec import parse_spec
from opscale.wire.specs import spec_to_pb
from tests.component.cli_kit import OPERATOR_SPEC, Cli
from tests.component.conftest import ServeAddress
from tests.component.decision_kit import start_replica


async def test_apply_get_describe_freeze_delete(
    runtime: Runtime, serve_address: ServeAddress, tmp_path: Path
) -> None:
    replica = await start_replica(runtime, "r1")
    placement = await serve_address("placement")
    cli = Cli(tmp_path, decision=f"127.0.0.1:{replica.running.port}", placement=placement)
    try:
        spec = cli.write("chat.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=2000))
        assert (await cli.ok("apply", "-f", spec)).strip() == "deployment/chat created (version 1)"
        assert (await cli.ok("apply", "-f", spec)).strip() == "deployment/chat unchanged (version 1)"
        changed = cli.write("chat2.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=1500))
        assert "would be configured" in await cli.ok("apply", "-f", changed, "--dry-run")
        assert (await cli.ok("apply", "-f", changed)).strip() == "deployment/chat configured (version 2)"
        applied = await cli.json("apply", "-f", changed)
        assert applied[0]["outcome"] == "unchanged" and applied[0]["deployment"]["version"] == "2"

        table = await cli.ok("get", "deployments")
        assert table.splitlines()[0].split()[:3] == ["NAME", "MODEL", "POLICY"]
        row = table.splitlines()[1].split()
        assert row[:5] == ["chat", "llama3-70b", "operator", "disaggregated", "H100"]
        assert "1,500/100 ms @p99" in table
        listed = await cli.json("get", "deployments")
        assert [d["spec"]["name"] for d in listed] == ["chat"]
        assert listed[0]["spec"]["slo"]["ttft_ms"] == 1500 and listed[0]["frozen"] is False
        assert (await cli.yaml("get", "deployments"))[0]["spec"]["policy_name"] == "operator"

        described = await cli.ok("describe", "deployment", "chat")
        assert (
            "Version:" in described and "preset: llama3-70b" in described and "ttft_ms: 1500.0" in described
        )
        assert "Replicas: none" in described
        data = await cli.json("describe", "deployment", "chat")
        assert data["deployment"]["spec"]["name"] == "chat" and data["replicas"] == []
        assert set(data) == {"deployment", "decision", "replicas", "shortfalls"}
        # Placement down: describe still shows what decision knows, and says what it could not get.
        partial = await cli.ok("describe", "deployment", "chat", "--placement", "127.0.0.1:1")
        assert "Replicas: unknown (placement at 127.0.0.1:1 is unreachable)" in partial and "Spec:" in partial
        assert (await cli.json("describe", "deployment", "chat", "--placement", "127.0.0.1:1"))[
            "replicas"
        ] is None
        assert (await cli.yaml("describe", "deployment", "chat"))["deployment"]["version"] == "2"
        # What get/describe print (proto field and enum names) applies back unchanged.
        for printed in (("get", "deployments"), ("describe", "deployment", "chat")):
            for fmt in ("yaml", "json"):
                dumped = cli.write(f"printed.{fmt}", await cli.ok(*printed, "-o", fmt))
                assert (
                    await cli.ok("apply", "-f", dumped)
                ).strip() == "deployment/chat unchanged (version 2)"
        # The spec describe prints as a table is one apply takes, too.
        shown = described.split("Spec:\n", 1)[1].split("\n\n", 1)[0]
        assert (await cli.ok("apply", "-f", cli.write("shown.yaml", shown))).strip() == (
            "deployment/chat unchanged (version 2)"
        )

        assert "deployment/chat frozen" in await cli.ok("freeze", "chat", "--reason", "incident 42")
        assert "yes" in (await cli.ok("get", "deployments")).splitlines()[1]
        assert (await cli.json("unfreeze", "chat"))["frozen"] is False
        assert (await cli.yaml("freeze", "chat"))["frozen"] is True
        assert "unfrozen" in await cli.ok("unfreeze", "chat")

        stale = await cli.fails(4, "delete", "chat", "--expected-version", "1")
        assert "chat" in stale
        assert (await cli.ok("delete", "chat")).strip() == "deployment/chat deleted (was version 2)"
        assert "not found" in await cli.fails(3, "describe", "deployment", "chat")
        assert "not found" in await cli.fails(3, "freeze", "chat")
        await cli.ok("apply", "-f", cli.write("tmp.yaml", OPERATOR_SPEC.format(name="tmp", ttft_ms=2000)))
        assert await cli.yaml("delete", "tmp") == {"name": "tmp", "deleted_version": "1"}
        assert (await cli.ok("get", "deployments")).strip() == "No deployments."
        assert await cli.json("get", "deployments") == []
    finally:
        await replica.stop()


# The CLI is the same whatever the backend; the lifecycle test above covers both pairs, these the embedded.
EMBEDDED = pytest.mark.parametrize("runtime", ["embedded"], indirect=True)


@EMBEDDED
async def test_invalid_specs_name_the_field(runtime: Runtime, tmp_path: Path) -> None:
    replica = await start_replica(runtime, "r1")
    cli = Cli(tmp_path, decision=f"127.0.0.1:{replica.running.port}")
    try:
        bad = cli.write("bad.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=-5))
        message = await cli.fails(2, "apply", "-f", bad)
        assert "spec.slo.ttft_ms" in message and "bad.yaml" in message
        broken = cli.write("broken.yaml", "name: chat\nmodel: [unclosed\n")
        assert "broken.yaml: line" in await cli.fails(2, "apply", "-f", broken)
        assert "cannot read" in await cli.fails(2, "apply", "-f", str(tmp_path / "missing.yaml"))
        assert "mapping" in await cli.fails(2, "apply", "-f", cli.write("list.yaml", "- 1\n- 2\n"))
        assert "no spec" in await cli.fails(2, "apply", "-f", cli.write("empty.yaml", "\n"))
        # Nothing was created by any of them.
        assert await cli.json("get", "deployments") == []
    finally:
        await replica.stop()


class RacingClient(Client):
    """Someone else updates the deployment between apply's read and its write."""

    def __init__(self, address: str, rival: Client, rival_spec: dpb.DeploymentSpec) -> None:
        super().__init__({"decision": address})
        self._rival = rival
        self._rival_spec = rival_spec

    def call(self, service: Any, method: Any, request: Any, *, instead: Any = None) -> Any:
        if isinstance(request, dpb.UpdateDeploymentRequest):
            current = self._rival.decision.GetDeployment(dpb.GetDeploymentRequest(name="chat"), timeout=5)
            self._rival.decision.UpdateDeployment(
                dpb.UpdateDeploymentRequest(
                    spec=self._rival_spec, expected_version=current.deployment.version
                ),
                timeout=5,
            )
        return super().call(service, method, request, instead=instead)


@EMBEDDED
async def test_apply_refuses_to_overwrite_a_concurrent_change(
    runtime: Runtime, tmp_path: Path, capsys: Any
) -> None:
    replica = await start_replica(runtime, "r1")
    address = f"127.0.0.1:{replica.running.port}"
    cli = Cli(tmp_path, decision=address)
    try:
        await cli.ok("apply", "-f", cli.write("a.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=2000)))
        mine = read_specs(Path(cli.write("b.yaml", OPERATOR_SPEC.format(name="chat", ttft_ms=1500))))[0]
        theirs = spec_to_pb(
            parse_spec({**mine.model_dump(mode="json"), "slo": {"ttft_ms": 900, "tbt_ms": 90}})
        )
        with (
            Client({"decision": address}) as rival,
            RacingClient(address, rival, theirs) as client,
            pytest.raises(typer.Exit) as info,
        ):
            await asyncio.to_thread(apply_one, client, mine, False)
        assert info.value.exit_code == 4
        err = capsys.readouterr().err
        assert "changed by someone else since version 1" in err and "apply again" in err
        # Their change stands; ours was not written over it.
        stored = (await cli.json("get", "deployments"))[0]
        assert stored["version"] == "2" and stored["spec"]["slo"]["ttft_ms"] == 900
    finally:
        await replica.stop()


def test_status_codes_used_here_are_in_the_table() -> None:
    from opscale.cli.exit_codes import exit_for_status

    assert exit_for_status(grpc.StatusCode.ABORTED) == 4
    assert exit_for_status(grpc.StatusCode.NOT_FOUND) == 3
