"""Issue 13's reproducers, each a regression test on both backend pairs (PostgreSQL refuses a NUL byte
and an integer beyond its column, SQLite silently took them): every one is now INVALID_ARGUMENT naming
the field, never INTERNAL or UNKNOWN."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.api.ingest.v1 import ingest_pb2 as ipb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.wire.pages import MAX_PAGE_BYTES
from tests.builders import register_once, spec_pb
from tests.component.conftest import Serve

NUL = "chat\x00"


async def refused(call: Awaitable[Any], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert field in (info.value.details() or ""), info.value.details()


async def test_nul_bytes_and_out_of_range_integers_are_invalid_argument(serve: Serve) -> None:
    decision = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    placement = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    await decision.CreateDeployment(dpb.CreateDeploymentRequest(spec=spec_pb(name="chat")), timeout=10)
    calls: list[tuple[Callable[..., Awaitable[Any]], Any, str]] = [
        (decision.GetDeployment, dpb.GetDeploymentRequest(name=NUL), "name"),
        (decision.DeleteDeployment, dpb.DeleteDeploymentRequest(name=NUL), "name"),
        (decision.FreezeDeployment, dpb.FreezeDeploymentRequest(name=NUL), "name"),
        (decision.UnfreezeDeployment, dpb.UnfreezeDeploymentRequest(name=NUL), "name"),
        (decision.GetDecision, dpb.GetDecisionRequest(deployment=NUL), "deployment"),
        (decision.ListDecisions, dpb.ListDecisionsRequest(deployment=NUL), "deployment"),
        (decision.ExplainDecision, dpb.ExplainDecisionRequest(deployment=NUL), "deployment"),
        (
            decision.CreateDeployment,
            dpb.CreateDeploymentRequest(spec=spec_pb(name="chat"), actor=NUL),
            "actor",
        ),
        (placement.GetNode, ppb.GetNodeRequest(name=NUL), "name"),
        (placement.CordonNode, ppb.CordonNodeRequest(name=NUL), "name"),
        (placement.DrainNode, ppb.DrainNodeRequest(name=NUL), "name"),
        (placement.GetReplicas, ppb.GetReplicasRequest(deployment=NUL), "deployment"),
        (placement.ListGpus, ppb.ListGpusRequest(node=NUL), "node"),
        (
            decision.UpdateDeployment,
            dpb.UpdateDeploymentRequest(spec=spec_pb(name="chat"), expected_version=2**31),
            "expected_version",
        ),
        (
            decision.ExplainDecision,
            dpb.ExplainDecisionRequest(deployment="chat", decision_id="9223372036854775808"),
            "decision_id",
        ),
        (decision.GetDeployment, dpb.GetDeploymentRequest(name="chat", version=2**31), "version"),
        (placement.CordonNode, ppb.CordonNodeRequest(name="n", expected_version=2**40), "expected_version"),
    ]
    for method, request, field in calls:
        await refused(method(request, timeout=10), field)


async def test_agent_registration_edges(serve: Serve) -> None:
    channel = await serve("placement")
    stub = agent_pb2_grpc.AgentServiceStub(channel)

    async def register(msg: apb.Register) -> apb.ConnectResponse:
        reply: apb.ConnectResponse = await register_once(channel, msg)
        return reply

    big_index = apb.Register(node_name="n1", session_id="s1", gpus=[apb.GpuInfo(index=2**32 - 1)])
    await refused(register(big_index), "register.gpus[0].index")
    nul_label = apb.Register(node_name="n1", session_id="s1", labels={"zone": "a\x00"})
    await refused(register(nul_label), "register.labels")

    # A second live session for a node is refused without learning the first one's session id.
    first = stub.Connect(timeout=10)
    await first.write(apb.ConnectRequest(register=apb.Register(node_name="n1", session_id="secret-1")))
    assert isinstance(await first.read(), apb.ConnectResponse)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(apb.Register(node_name="n1", session_id="other"))
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "secret-1" not in (info.value.details() or "")
    finally:
        first.cancel()


async def test_malformed_frames_are_invalid_argument_on_every_rpc_kind(serve: Serve) -> None:
    ingest = await serve("ingest")
    placement = await serve("placement")
    decision = await serve("decision")
    junk = b"\x0a\x05ab"  # a string field whose length runs past the frame
    raw: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    kinds: list[Any] = [
        decision.unary_unary("/opscale.api.decision.v1.DecisionService/GetDeployment", raw, raw)(
            junk, timeout=10
        ),
        ingest.stream_unary("/opscale.api.ingest.v1.IngestService/StreamSamples", raw, raw)(
            iter([ipb.StreamSamplesRequest(batch_id="ok").SerializeToString(), junk]), timeout=10
        ),
    ]
    for call in kinds:
        await refused(call, "not a valid")
    for path, channel in (
        ("/opscale.api.decision.v1.DecisionService/WatchDecisions", decision),
        ("/opscale.api.agent.v1.AgentService/Connect", placement),
    ):
        stream: Any = (
            channel.stream_stream(path, raw, raw)(iter([junk]), timeout=10)
            if "Connect" in path
            else channel.unary_stream(path, raw, raw)(junk, timeout=10)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


async def test_oversize_specs_are_refused_and_lists_stay_under_the_message_limit(serve: Serve) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(await serve("decision"))
    huge = spec_pb(name="huge")
    huge.model.ClearField("preset")
    huge.model.name = "big"
    huge.model.hf_config_json = '{"pad": "' + "x" * (9 << 20) + '"}'
    await refused(stub.CreateDeployment(dpb.CreateDeploymentRequest(spec=huge), timeout=30), "spec")

    # 48 specs of ~200 KiB (labels) are ~9.4 MiB: each page stops before 3 MiB (clients take 4 MiB).
    for i in range(48):
        labels = {f"k{j}": "v" * 4000 for j in range(50)}
        await stub.CreateDeployment(
            dpb.CreateDeploymentRequest(spec=spec_pb(name=f"d{i:02d}", labels=labels)), timeout=30
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListDeployments(
            dpb.ListDeploymentsRequest(page=cpb.PageRequest(page_size=1000, page_token=token)), timeout=30
        )
        assert page.ByteSize() <= MAX_PAGE_BYTES
        seen += [d.spec.name for d in page.deployments]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"d{i:02d}" for i in range(48)]
