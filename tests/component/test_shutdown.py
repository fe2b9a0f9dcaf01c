"""Stopping a service ends its long-lived streams at once (issue 14): an open WatchDecisions gets
UNAVAILABLE ("watch again") and an agent's Connect stream ends, instead of both holding the shutdown for
the whole grace period and then being cancelled."""

from __future__ import annotations

import time

import grpc
import pytest

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.grpcutil.server import start_service, stop_service
from opscale.services.catalog import SERVICES
from opscale.services.runtime import Runtime

GRACE_S = 5.0


async def test_stop_ends_open_streams_instead_of_waiting_out_the_grace(runtime: Runtime) -> None:
    decision = await start_service(SERVICES["decision"].build(runtime), "127.0.0.1", 0, runtime.telemetry)
    placement = await start_service(SERVICES["placement"].build(runtime), "127.0.0.1", 0, runtime.telemetry)
    to_decision = grpc.aio.insecure_channel(f"127.0.0.1:{decision.port}")
    to_placement = grpc.aio.insecure_channel(f"127.0.0.1:{placement.port}")
    try:
        watch = decision_pb2_grpc.DecisionServiceStub(to_decision).WatchDecisions(
            dpb.WatchDecisionsRequest(), timeout=30
        )
        agent = agent_pb2_grpc.AgentServiceStub(to_placement).Connect(timeout=30)
        await agent.write(apb.ConnectRequest(register=apb.Register(node_name="n1", session_id="s1")))
        assert (await agent.read()).HasField("register_ack")
        for running in (placement, decision):
            started = time.monotonic()
            await stop_service(running, GRACE_S)
            # Measured 0.01 s (placement) and 0.21 s (decision: its loop's wake); 5.0 s each before.
            assert time.monotonic() - started < GRACE_S / 2, running.name
        assert await agent.read() is grpc.aio.EOF
        assert await agent.code() is grpc.StatusCode.OK
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await watch.read()
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert "shutting down" in (info.value.details() or "")
    finally:
        await to_decision.close(None)
        await to_placement.close(None)
