"""The KEDA external scaler over real gRPC, spoken to with KEDA's own externalscaler proto.

A static deployment decides N replicas per pool; KEDA (played by this test) reads GetMetricSpec
(target 1), GetMetrics (N) and IsActive, and holds StreamIsActive open. A spec change reaches the
stream and GetMetrics within 2 s of the update: the loop decides at its next tick (the test moves the
virtual clock one 1 s interval) and the decision is pushed through WatchDecisions to the scaler. Scale
to zero flips IsActive. Unknown deployments and pools are NOT_FOUND, bad metadata INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.keda import externalscaler_pb2 as kpb
from opscale.api.keda import externalscaler_pb2_grpc
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.services.decision.actuators import KedaActuator
from opscale.services.keda.wiring import build as build_keda
from opscale.services.runtime import Runtime
from tests.builders import static_spec_pb, until
from tests.component.decision_kit import Replica, advance, decisions, start_replica

NO_DAMPING = {"scale_down_window_s": 0, "scale_down_cooldown_s": 0, "scale_up_cooldown_s": 0}
PUSH_DEADLINE_S = 10.0


def chat(decode: int, prefill: int = 1) -> pb.DeploymentSpec:
    return static_spec_pb(
        "chat", {"decode/model": decode, "prefill/model": prefill}, stabilization=NO_DAMPING, interval_s=1.0
    )


def ref(pool: str = "decode/model", deployment: str = "chat") -> kpb.ScaledObjectRef:
    # KEDA passes the trigger's whole metadata, scalerAddress included; opscale reads its two keys.
    return kpb.ScaledObjectRef(
        name=f"{deployment}-decode",
        namespace="serving",
        scalerMetadata={"scalerAddress": "opscale-keda:50064", "deployment": deployment, "pool": pool},
    )


async def start_scaler(runtime: Runtime, decision: Replica) -> RunningService:
    settings = runtime.settings.model_copy(update={"decision_address": f"127.0.0.1:{decision.running.port}"})
    return await start_service(
        build_keda(dataclasses.replace(runtime, settings=settings)), "127.0.0.1", 0, runtime.telemetry
    )


@pytest.fixture
async def keda(runtime: Runtime) -> AsyncIterator[tuple[Replica, externalscaler_pb2_grpc.ExternalScalerStub]]:
    decision = await start_replica(runtime, "r1", actuator=KedaActuator())
    scaler = await start_scaler(runtime, decision)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{scaler.port}")
    try:
        yield decision, externalscaler_pb2_grpc.ExternalScalerStub(channel)
    finally:
        await channel.close(None)
        await stop_service(scaler, 1.0)
        await decision.stop()


async def metric(stub: externalscaler_pb2_grpc.ExternalScalerStub, name: str) -> float:
    reply = await stub.GetMetrics(kpb.GetMetricsRequest(scaledObjectRef=ref(), metricName=name), timeout=5)
    (value,) = reply.metricValues
    assert value.metricValue == value.metricValueFloat  # the deprecated integer agrees
    return value.metricValueFloat


async def update(decision: Replica, spec: pb.DeploymentSpec, runtime: Runtime) -> None:
    got = await decision.stub.GetDeployment(pb.GetDeploymentRequest(name="chat"), timeout=5)
    request = pb.UpdateDeploymentRequest(spec=spec, expected_version=got.deployment.version)
    await decision.stub.UpdateDeployment(request, timeout=5)
    version = got.deployment.version + 1
    # The control loop runs on the virtual clock: tick it as real time would (1 s per 0.2 s here) until a
    # decision of the new version exists. A single tick can read the spec before the update reached the
    # loop (seen on a loaded CI machine), and then, with the clock stopped, nothing would tick again.
    for _ in range(50):
        advance(runtime, 1.0)
        latest = await decisions(decision.stub, "chat")
        if any(d.spec_version == version for d in latest):
            return
        await asyncio.sleep(0.2)


async def test_metric_is_the_decided_count_and_follows_the_spec(
    runtime: Runtime, keda: tuple[Replica, externalscaler_pb2_grpc.ExternalScalerStub]
) -> None:
    decision, stub = keda
    await decision.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=chat(decode=3)), timeout=5)
    await until(lambda: decisions(decision.stub, "chat"), what="the first decision")

    spec = await stub.GetMetricSpec(ref(), timeout=5)
    (metric_spec,) = spec.metricSpecs
    assert (metric_spec.targetSizeFloat, metric_spec.targetSize) == (1.0, 1)
    assert metric_spec.metricName == "opscale-chat-decode-model"
    # AverageValue target 1: the HPA's ceil(metric / target) is the decided count itself.
    assert await metric(stub, metric_spec.metricName) == 3
    assert (await stub.IsActive(ref(), timeout=5)).result is True
    streamed = [await anext(aiter(stub.StreamMetricSpec(ref())))]
    assert streamed[0] == spec

    stream = stub.StreamIsActive(ref())
    assert (await stream.read()).result is True  # the current state at once

    started = time.monotonic()
    await update(decision, chat(decode=5), runtime)
    pushed = await asyncio.wait_for(stream.read(), PUSH_DEADLINE_S)
    assert pushed.result is True and await metric(stub, metric_spec.metricName) == 5
    assert time.monotonic() - started < PUSH_DEADLINE_S

    # Scale to zero: the decision is 0 replicas, so the pool is inactive (KEDA scales it to zero).
    started = time.monotonic()
    await update(decision, chat(decode=0), runtime)
    pushed = await asyncio.wait_for(stream.read(), PUSH_DEADLINE_S)
    assert pushed.result is False and await metric(stub, metric_spec.metricName) == 0
    assert time.monotonic() - started < PUSH_DEADLINE_S
    assert (await stub.IsActive(ref(), timeout=5)).result is False
    stream.cancel()


@pytest.mark.parametrize(
    ("scaled", "code", "text"),
    [
        (ref(deployment="nobody"), grpc.StatusCode.NOT_FOUND, "opscale has no deployment 'nobody'"),
        (ref(pool="decode/attention"), grpc.StatusCode.NOT_FOUND, "no pool decode/attention; its pools: "),
        (ref(pool="decode"), grpc.StatusCode.INVALID_ARGUMENT, "scalerMetadata.pool"),
        (ref(pool="decode/gpu"), grpc.StatusCode.INVALID_ARGUMENT, "operator 'gpu' is not one of"),
        (
            kpb.ScaledObjectRef(name="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "scalerMetadata.deployment is required",
        ),
    ],
)
async def test_bad_references_get_clear_errors(
    keda: tuple[Replica, externalscaler_pb2_grpc.ExternalScalerStub],
    scaled: kpb.ScaledObjectRef,
    code: grpc.StatusCode,
    text: str,
) -> None:
    decision, stub = keda
    await decision.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=chat(decode=2)), timeout=5)
    await until(lambda: decisions(decision.stub, "chat"), what="the first decision")
    for call in (
        stub.IsActive(scaled, timeout=5),
        stub.GetMetricSpec(scaled, timeout=5),
        stub.GetMetrics(kpb.GetMetricsRequest(scaledObjectRef=scaled, metricName="m"), timeout=5),
        anext(aiter(stub.StreamIsActive(scaled, timeout=5))),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == code and text in str(info.value.details())


async def test_the_scaler_stops_without_waiting_out_its_grace(runtime: Runtime) -> None:
    """SIGTERM's path: the follower waits on a watch whose next message may never come, and a KEDA stream
    is open. Stopping ends both at once; it used to hold every shutdown for the whole grace."""
    decision = await start_replica(runtime, "r1", actuator=KedaActuator())
    try:
        await decision.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=chat(decode=2)), timeout=5)
        await until(lambda: decisions(decision.stub, "chat"), what="the first decision")
        scaler = await start_scaler(runtime, decision)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.port}") as channel:
            stub = externalscaler_pb2_grpc.ExternalScalerStub(channel)

            async def active() -> bool:
                return bool((await stub.IsActive(ref(), timeout=5)).result)

            await until(active, what="the scaler follows the decisions")
            stream = stub.StreamIsActive(ref())
            assert (await stream.read()).result is True
            grace_s = 30.0
            started = time.monotonic()
            await asyncio.wait_for(stop_service(scaler, grace_s), grace_s)  # a hang fails here
            assert time.monotonic() - started < grace_s / 2
            stream.cancel()
    finally:
        await decision.stop()
