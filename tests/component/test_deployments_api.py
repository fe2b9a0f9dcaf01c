"""Deployment specs over gRPC: versions, compare-and-swap, not-found, freeze, paging."""

from __future__ import annotations

import grpc
import pytest

from opscale.api.common.v1 import common_pb2
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from tests.builders import spec_pb
from tests.component.conftest import Serve


def spec(name: str = "llama", ttft_ms: float = 2000) -> pb.DeploymentSpec:
    return spec_pb(name=name, slo={"ttft_ms": ttft_ms, "tbt_ms": 100})


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_versioned_lifecycle(serve: Serve) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    created = (await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=spec(), actor="alice"))).deployment
    assert created.version == 1 and created.spec.slo.percentile == 99  # default filled in

    err = await _error(stub.CreateDeployment(pb.CreateDeploymentRequest(spec=spec())))
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS and "llama" in (err.details() or "")

    updated = (
        await stub.UpdateDeployment(pb.UpdateDeploymentRequest(spec=spec(ttft_ms=1500), expected_version=1))
    ).deployment
    assert updated.version == 2 and updated.spec.slo.ttft_ms == 1500

    # A writer that read version 1 loses the compare-and-swap and is told both versions.
    err = await _error(
        stub.UpdateDeployment(pb.UpdateDeploymentRequest(spec=spec(ttft_ms=900), expected_version=1))
    )
    assert err.code() is grpc.StatusCode.ABORTED
    assert "2" in (err.details() or "") and "1" in (err.details() or "")
    err = await _error(stub.UpdateDeployment(pb.UpdateDeploymentRequest(spec=spec(ttft_ms=900))))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "expected_version" in (err.details() or "")
    current = (await stub.GetDeployment(pb.GetDeploymentRequest(name="llama"))).deployment
    assert current.version == 2 and current.spec.slo.ttft_ms == 1500  # the losing write left nothing

    old = (await stub.GetDeployment(pb.GetDeploymentRequest(name="llama", version=1))).deployment
    assert old.spec.slo.ttft_ms == 2000

    frozen = (
        await stub.FreezeDeployment(pb.FreezeDeploymentRequest(name="llama", reason="incident"))
    ).deployment
    assert frozen.frozen
    thawed = (await stub.UnfreezeDeployment(pb.UnfreezeDeploymentRequest(name="llama"))).deployment
    assert not thawed.frozen

    err = await _error(stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="llama", expected_version=1)))
    assert err.code() is grpc.StatusCode.ABORTED
    deleted = await stub.DeleteDeployment(pb.DeleteDeploymentRequest(name="llama", expected_version=2))
    assert deleted.deleted_version == 2
    err = await _error(stub.GetDeployment(pb.GetDeploymentRequest(name="llama")))
    assert err.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "rpc",
    ["GetDeployment", "DeleteDeployment", "FreezeDeployment", "UnfreezeDeployment"],
)
async def test_missing_deployment_is_not_found(serve: Serve, rpc: str) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    request = getattr(pb, f"{rpc}Request")(name="ghost")
    err = await _error(getattr(stub, rpc)(request))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "ghost" in (err.details() or "")


async def test_update_of_missing_deployment(serve: Serve) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    err = await _error(
        stub.UpdateDeployment(pb.UpdateDeploymentRequest(spec=spec("ghost"), expected_version=1))
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND


async def test_list_pages(serve: Serve) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    for i in range(5):
        await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=spec(f"d{i}")))
    names, token = [], ""
    while True:
        reply = await stub.ListDeployments(
            pb.ListDeploymentsRequest(page=common_pb2.PageRequest(page_size=2, page_token=token))
        )
        names += [d.spec.name for d in reply.deployments]
        token = reply.next_page_token
        if not token:
            break
    assert names == ["d0", "d1", "d2", "d3", "d4"]
    err = await _error(
        stub.ListDeployments(pb.ListDeploymentsRequest(page=common_pb2.PageRequest(page_size=5000)))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
