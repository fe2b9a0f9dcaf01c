"""`opscale get decisions`, `explain`, `what-if` and `top` against a decision replica whose loop decides
on the test's virtual clock (decision_kit): tables, JSON/YAML, and the error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from opscale.services.runtime import Runtime
from tests.component.cli_kit import PD_SPEC, Cli
from tests.component.decision_kit import (
    DECODE_PB,
    PREFILL_PB,
    advance,
    counts,
    decisions,
    eventually,
    push_load,
    start_replica,
)

EMBEDDED = pytest.mark.parametrize("runtime", ["embedded"], indirect=True)


async def _newest_has(replica_stub: object, name: str, want: dict[tuple[int, int], int]) -> bool:
    found = await decisions(replica_stub, name)  # type: ignore[arg-type]
    return bool(found) and counts(found[0]) == want


async def test_decisions_explain_what_if_top(runtime: Runtime, tmp_path: Path) -> None:
    replica = await start_replica(runtime, "r1")
    cli = Cli(tmp_path, decision=f"127.0.0.1:{replica.running.port}")
    try:
        assert "created" in await cli.ok("apply", "-f", cli.write("chat.yaml", PD_SPEC.format(name="chat")))
        await eventually(lambda: decisions(replica.stub, "chat"))
        await push_load(runtime, "chat", decode_tps=4000)
        advance(runtime, 1)
        # pd: ceil(4000 decode tok/s / 1000 per instance) = 4 decode; prefill ceil(4 × 0.5) = 2.
        await eventually(lambda: _newest_has(replica.stub, "chat", {DECODE_PB: 4, PREFILL_PB: 2}))
        newest = (await decisions(replica.stub, "chat"))[0]

        table = await cli.ok("get", "decisions", "chat", "--limit", "5")
        header, first = table.splitlines()[:2]
        assert header.split()[:4] == ["ID", "TICK", "POLICY", "POOLS"]
        assert first.split()[0] == newest.id and "decode/model 4" in first and "prefill/model 2" in table
        listed = await cli.json("get", "decisions", "chat", "--limit", "2")
        assert len(listed) <= 2 and listed[0]["id"] == newest.id and listed[0]["policy"] == "pd"
        assert (await cli.yaml("get", "decisions", "chat"))[0]["deployment"] == "chat"
        assert "nobody" in await cli.fails(3, "get", "decisions", "nobody")

        explained = await cli.ok("explain", "chat", newest.id)
        for section in ("Inputs", "Model", "Decision", "Reasons:", "Stabilizer", "Placement: applied"):
            assert section in explained, section
        assert f"Decision:    {newest.id}" in explained and "4,000 tok/s" in explained
        data = await cli.json("explain", "chat")
        assert data["decision"]["deployment"] == "chat" and data["narrative"]
        assert {e["pool"]["stage"] for e in data["estimates"]} == {"STAGE_DECODE", "STAGE_PREFILL"}
        assert (await cli.yaml("explain", "chat", newest.id))["decision"]["id"] == newest.id
        assert "Policy: pd" in await cli.ok("explain", "chat", "--narrative")
        await cli.fails(3, "explain", "chat", "999999")
        await cli.fails(3, "explain", "nobody")

        # pd: decode 10 req/s × 256 tokens = 2560 tok/s → ceil(2560 / 1000) = 3; prefill ceil(3 × 0.5) = 2.
        load = ["--rps", "10", "--input-tokens", "512", "--output-tokens", "256"]
        side = await cli.ok("what-if", "chat", *load)
        assert "What if: 10 req/s, 512 tokens in, 256 out" in side
        assert "pd" in side and "decode/model 3" in side and "prefill/model 2" in side
        plans = (await cli.json("what-if", "chat", *load))["plans"]
        assert [p["policy_name"] for p in plans] == ["pd"]
        compared = await cli.yaml("what-if", "chat", *load, "-p", "pd", "-p", "utilization")
        assert [p["policy_name"] for p in compared["plans"]] == ["pd", "utilization"]
        inline = cli.write("other.yaml", PD_SPEC.format(name="not-created"))
        assert "decode/model 3" in await cli.ok("what-if", "-f", inline, *load)
        assert "requests_per_s" in await cli.fails(2, "what-if", "chat", "--rps", "-1", *load[2:])
        assert "one of them" in await cli.fails(2, "what-if", *load)
        await cli.fails(3, "what-if", "nobody", *load)

        top = await cli.ok("top", "--iterations", "2", "--interval", "0.1")
        assert top.count("opscale top") == 2 and "chat" in top and "TTFT P99 / SLO" in top
        assert "decode/model 4" in top and "prefill/model 2" in top and "4,000 dec tok/s" in top
        assert "1,000 ms ok" in top  # TTFT p99 100 ms against the 1000 ms SLO
        lines = (await cli.ok("top", "-n", "2", "--interval", "0.1", "-o", "json")).strip().splitlines()
        assert len(lines) == 2
        snapshot = json.loads(lines[0])
        assert (
            snapshot[0]["deployment"]["spec"]["name"] == "chat" and snapshot[0]["decision"]["policy"] == "pd"
        )
        docs = list(yaml.safe_load_all(await cli.ok("top", "chat", "-n", "1", "-o", "yaml")))
        assert docs[0][0]["decision"]["deployment"] == "chat"
        await cli.fails(3, "top", "nobody", "-n", "1")
    finally:
        await replica.stop()


@EMBEDDED
async def test_top_shows_a_deployment_before_its_first_decision(runtime: Runtime, tmp_path: Path) -> None:
    from opscale.services.decision.lease import Lease  # noqa: F401  (the NoLease double stands in for one)
    from tests.component.decision_kit import NoLease

    reader = await start_replica(runtime, "reader", lease=NoLease("reader"))  # serves, decides nothing
    cli = Cli(tmp_path, decision=f"127.0.0.1:{reader.running.port}")
    try:
        await cli.ok("apply", "-f", cli.write("chat.yaml", PD_SPEC.format(name="chat")))
        top = await cli.ok("top", "-n", "1")
        assert "no decision yet" in top
        assert json.loads(await cli.ok("top", "-n", "1", "-o", "json"))[0]["decision"] is None
        assert "Current decision: none yet" in await cli.ok("describe", "deployment", "chat")
        assert "No decisions for chat yet." in await cli.ok("get", "decisions", "chat")
    finally:
        await reader.stop()
