"""Node inventory over gRPC: list, get, GPUs, cordon/uncordon through the lifecycle table."""

from __future__ import annotations

import grpc
import pytest

from opscale.api.placement.v1 import placement_pb2 as pb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.records import GpuRecord
from opscale.db.repo import NodeRepo
from opscale.db.status import NodeStatus
from opscale.services.runtime import Runtime
from tests.component.conftest import Serve

H100_BYTES = 80 * 1024**3


async def register(runtime: Runtime, name: str, gpus: int, *, ready: bool = True) -> None:
    async with runtime.sessions() as session, session.begin():
        repo = NodeRepo(session, clock=runtime.clock)
        node = await repo.register(
            name,
            gpus=[
                GpuRecord(
                    index=i,
                    uuid=f"GPU-{name}-{i}",
                    gpu_type="H100",
                    memory_bytes=H100_BYTES,
                    nvlink_domain=f"{name}-nv",
                )
                for i in range(gpus)
            ],
            labels={"zone": "z1", "s1": "s1-a", "rack": "r7"},
            agent_session_id="s-1",
        )
        if ready:
            await repo.set_status(name, NodeStatus.READY, node.version)


async def test_inventory_and_cordon(serve: Serve, runtime: Runtime) -> None:
    stub = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    await register(runtime, "gpu-a", 8)
    await register(runtime, "gpu-b", 4)

    nodes = (await stub.ListNodes(pb.ListNodesRequest())).nodes
    assert [n.name for n in nodes] == ["gpu-a", "gpu-b"]
    assert nodes[0].status == pb.NODE_STATUS_READY
    assert nodes[0].topology.zone == "z1" and nodes[0].topology.s1 == "s1-a"
    assert dict(nodes[0].labels) == {"rack": "r7"}
    assert len((await stub.ListGpus(pb.ListGpusRequest())).gpus) == 12
    assert len((await stub.ListGpus(pb.ListGpusRequest(node="gpu-b", gpu_type="h100"))).gpus) == 4

    cordoned = (await stub.CordonNode(pb.CordonNodeRequest(name="gpu-a", actor="sre"))).node
    assert cordoned.status == pb.NODE_STATUS_CORDONED
    # Compare-and-swap: the version read before the cordon is stale now.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UncordonNode(pb.UncordonNodeRequest(name="gpu-a", expected_version=nodes[0].version))
    assert info.value.code() is grpc.StatusCode.ABORTED
    uncordoned = (
        await stub.UncordonNode(pb.UncordonNodeRequest(name="gpu-a", expected_version=cordoned.version))
    ).node
    assert uncordoned.status == pb.NODE_STATUS_READY


async def test_illegal_transition_is_refused(serve: Serve, runtime: Runtime) -> None:
    stub = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    await register(runtime, "gpu-c", 1, ready=False)
    async with runtime.sessions() as session, session.begin():
        repo = NodeRepo(session, clock=runtime.clock)
        node = await repo.get("gpu-c")
        await repo.set_status("gpu-c", NodeStatus.LOST, node.version)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UncordonNode(pb.UncordonNodeRequest(name="gpu-c"))
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "gpu-c" in (info.value.details() or "")
    assert (await stub.GetNode(pb.GetNodeRequest(name="gpu-c"))).node.status == pb.NODE_STATUS_LOST
