"""`opscale get nodes|gpus|replicas`, `describe node`, `cordon`/`uncordon`/`drain` against a real placement
service: tables, JSON/YAML, and the error paths (unknown node, stale version, illegal transition)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.repo import DeploymentRepo, NodeRepo
from opscale.db.status import NodeStatus
from opscale.services.runtime import Runtime
from tests.component.cli_kit import Cli
from tests.component.conftest import Serve, ServeAddress
from tests.component.test_nodes_api import register

DECODE = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_MODEL)


async def test_nodes_gpus_cordon_drain_replicas(
    serve_address: ServeAddress, serve: Serve, runtime: Runtime, tmp_path: Path
) -> None:
    address = await serve_address("placement")
    cli = Cli(tmp_path, placement=address)
    await register(runtime, "gpu-a", 8)
    await register(runtime, "gpu-b", 4)

    table = (await cli.ok("get", "nodes")).splitlines()
    assert table[0].split()[:3] == ["NAME", "STATUS", "GPUS"]
    assert table[1].split()[:4] == ["gpu-a", "ready", "8×", "H100"]
    assert table[2].split()[:4] == ["gpu-b", "ready", "4×", "H100"]
    nodes = await cli.json("get", "nodes")
    assert [n["name"] for n in nodes] == ["gpu-a", "gpu-b"] and nodes[0]["status"] == "NODE_STATUS_READY"
    assert (await cli.yaml("get", "nodes"))[1]["topology"]["zone"] == "z1"
    assert await cli.json("get", "node") == nodes  # the singular, as kubectl allows

    gpus = (await cli.ok("get", "gpus", "--node", "gpu-b")).splitlines()
    assert gpus[0].split()[:3] == ["NODE", "INDEX", "TYPE"] and len(gpus) == 5
    assert gpus[1].split()[:5] == ["gpu-b", "0", "H100", "80", "GiB"]
    assert len(await cli.json("get", "gpus")) == 12
    assert len(await cli.yaml("get", "gpus", "--gpu-type", "h100", "--node", "gpu-a")) == 8
    assert "nobody" in await cli.fails(3, "get", "gpus", "--node", "nobody")

    described = await cli.ok("describe", "node", "gpu-a")
    assert "Status:" in described and "ready" in described and "GPU-gpu-a-7" in described
    assert "rack=r7" in described
    assert (await cli.json("describe", "node", "gpu-a"))["name"] == "gpu-a"
    assert len((await cli.yaml("describe", "node", "gpu-b"))["gpus"]) == 4
    assert "gpu-zz" in await cli.fails(3, "describe", "node", "gpu-zz")

    version = nodes[0]["version"]
    assert (await cli.ok("cordon", "gpu-a", "--reason", "bad fan")).strip() == "node/gpu-a cordoned"
    assert (await cli.json("get", "nodes"))[0]["status"] == "NODE_STATUS_CORDONED"
    # Compare-and-swap: the version read before the cordon is stale now.
    await cli.fails(4, "uncordon", "gpu-a", "--expected-version", str(version))
    assert (await cli.json("uncordon", "gpu-a"))["status"] == "NODE_STATUS_READY"
    assert (await cli.yaml("cordon", "gpu-b"))["status"] == "NODE_STATUS_CORDONED"
    assert (await cli.ok("uncordon", "gpu-b")).strip() == "node/gpu-b ready"
    await cli.fails(3, "cordon", "gpu-zz")

    # Two replicas placed through the API the decision service uses, then shown and drained.
    spec = {"name": "chat", "model": {"preset": "llama3-8b"}, "slo": {"ttft_ms": 1000, "tbt_ms": 100}}
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session, clock=runtime.clock).create("chat", spec, "test")
    stub = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    plan = cpb.PoolPlan(pool=DECODE, replicas=2, gpus_per_replica=1, batch_size=8, gpu_type="H100")
    await stub.ApplyDesired(
        ppb.ApplyDesiredRequest(deployment="chat", spec_version=1, pools=[plan]), timeout=5
    )
    replicas = await cli.json("get", "replicas", "chat")
    assert len(replicas) == 2 and {r["deployment"] for r in replicas} == {"chat"}
    table = (await cli.ok("get", "replicas", "chat")).splitlines()
    assert table[0].split()[:4] == ["ID", "DEPLOYMENT", "POOL", "NODE"] and len(table) == 3
    assert "decode/model" in table[1] and "running" in table[1]
    assert len(await cli.yaml("get", "replicas")) == 2
    assert (await cli.ok("get", "replicas", "other")).strip() == "No replicas for other."

    on = sorted({r["node"] for r in replicas})
    drained = (await cli.ok("drain", on[0], "--reason", "maintenance", "--grace-s", "30")).strip()
    moving = sum(1 for r in replicas if r["node"] == on[0])
    assert drained == f"node/{on[0]} draining: {moving} replica(s) to move"
    again = await cli.json("drain", on[0])
    assert again["node"]["status"] == "NODE_STATUS_DRAINING"
    await cli.fails(3, "drain", "gpu-zz")


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
async def test_illegal_transition_is_a_precondition_failure(
    serve_address: ServeAddress, runtime: Runtime, tmp_path: Path
) -> None:
    cli = Cli(tmp_path, placement=await serve_address("placement"))
    await register(runtime, "gpu-c", 1, ready=False)
    async with runtime.sessions() as session, session.begin():
        repo = NodeRepo(session, clock=runtime.clock)
        node = await repo.get("gpu-c")
        await repo.set_status("gpu-c", NodeStatus.LOST, node.version)
    assert "gpu-c" in await cli.fails(5, "uncordon", "gpu-c")
    assert (await cli.json("get", "nodes"))[0]["status"] == "NODE_STATUS_LOST"
