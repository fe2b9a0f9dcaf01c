"""Every service: health, reflection, a validation error for a malformed request, and UNIMPLEMENTED
(naming the capability) for RPCs whose behaviour belongs to later work."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from opscale.api.decision.v1 import decision_pb2, decision_pb2_grpc
from opscale.api.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from opscale.api.placement.v1 import placement_pb2, placement_pb2_grpc
from tests.component.conftest import Serve

SERVICE_NAMES = {
    "ingest": ["opscale.api.ingest.v1.IngestService"],
    "decision": ["opscale.api.decision.v1.DecisionService"],
    "placement": ["opscale.api.placement.v1.PlacementService", "opscale.api.agent.v1.AgentService"],
}


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
async def test_health_and_reflection(serve: Serve, service: str) -> None:
    channel = await serve(service)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", *SERVICE_NAMES[service]]:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    listed = {s.name async for reply in call for s in reply.list_services_response.service}
    assert set(SERVICE_NAMES[service]) <= listed
    assert {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= listed


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
async def test_reflection_v1_answers(serve: Serve, service: str) -> None:
    # v1's messages are v1alpha's under a new package name: the same bytes, on v1's method path.
    v1 = (await serve(service)).stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        *(reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in SERVICE_NAMES[service]),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
    ]
    replies = [reply async for reply in v1(iter(asks), timeout=5)]
    assert len(replies) == len(asks)
    listed = {s.name for s in replies[0].list_services_response.service}
    assert set(SERVICE_NAMES[service]) | {"grpc.reflection.v1.ServerReflection"} <= listed
    for name, reply in zip(SERVICE_NAMES[service], replies[1:-2], strict=True):
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in reply.file_descriptor_response.file_descriptor_proto
        ]
        assert any(name.rsplit(".", 1)[-1] in {s.name for s in f.service} for f in files), name
    own = descriptor_pb2.FileDescriptorProto.FromString(
        replies[-2].file_descriptor_response.file_descriptor_proto[0]
    )
    assert (own.package, own.service[0].name) == ("grpc.reflection.v1", "ServerReflection")
    assert own.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert replies[-1].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def _code_and_details(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


async def test_ingest_malformed_window_query(serve: Serve) -> None:
    stub = ingest_pb2_grpc.IngestServiceStub(await serve("ingest"))
    code, details = await _code_and_details(
        stub.GetWindowSummary(ingest_pb2.GetWindowSummaryRequest(deployment="d", window_s=-5), timeout=5)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "window_s" in details and "(0, 3600]" in details
    code, details = await _code_and_details(
        stub.GetWindowSummary(ingest_pb2.GetWindowSummaryRequest(window_s=10), timeout=5)
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "deployment is required")


async def test_decision_malformed_spec(serve: Serve) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    bad = decision_pb2.DeploymentSpec(
        name="llama",
        model=decision_pb2.ModelRef(preset="llama3-70b"),
        slo=decision_pb2.Slo(ttft_ms=-1, tbt_ms=100),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateDeployment(decision_pb2.CreateDeploymentRequest(spec=bad), timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.slo.ttft_ms" in (info.value.details() or "")
    # The google.rpc rich error model: BadRequest names the field, ErrorInfo the reason.
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]  # an aio error is a Call too
    assert status is not None and status.message == info.value.details()
    bad_request, error_info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
    unpacked = [d.Unpack(bad_request) or d.Unpack(error_info) for d in status.details]
    assert unpacked == [True, True]
    assert [v.field for v in bad_request.field_violations] == ["spec.slo.ttft_ms"]
    assert bad_request.field_violations[0].description == status.message
    assert (error_info.reason, error_info.domain) == ("INVALID_ARGUMENT", "opscale")
    assert error_info.metadata["field"] == "spec.slo.ttft_ms"
    code, details = await _code_and_details(
        stub.CreateDeployment(decision_pb2.CreateDeploymentRequest(), timeout=5)
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "spec is required")


async def test_placement_malformed_and_missing(serve: Serve) -> None:
    stub = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    code, details = await _code_and_details(stub.GetNode(placement_pb2.GetNodeRequest(), timeout=5))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "name is required")
    code, details = await _code_and_details(
        stub.ListNodes(placement_pb2.ListNodesRequest(page={"page_size": 5000}), timeout=5)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "page_size" in details
    code, details = await _code_and_details(
        stub.GetNode(placement_pb2.GetNodeRequest(name="gpu-9"), timeout=5)
    )
    assert code is grpc.StatusCode.NOT_FOUND and "gpu-9" in details


async def test_later_capabilities_say_unimplemented(serve: Serve) -> None:
    # The decision RPCs are implemented now (tests/component/test_decision_*.py): an unknown deployment
    # is NOT_FOUND, no longer UNIMPLEMENTED.
    decision = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    code, details = await _code_and_details(
        decision.GetDecision(decision_pb2.GetDecisionRequest(deployment="x"), timeout=5)
    )
    assert code is grpc.StatusCode.NOT_FOUND and "'x'" in details

    placement = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    code, details = await _code_and_details(
        placement.ApplyDesired(placement_pb2.ApplyDesiredRequest(deployment="x"), timeout=5)
    )
    # Placement is real now: a request without pool plans is the caller's mistake.
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "pools" in details
