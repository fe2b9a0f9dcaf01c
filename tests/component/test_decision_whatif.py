"""WhatIf over gRPC (by deployment name or an inline spec, bad loads named by field), and the loop's
telemetry: a span per deployment tick and the Prometheus series."""

from __future__ import annotations

import math

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.services.runtime import Runtime
from tests.builders import static_spec_pb
from tests.component.decision_kit import (
    DECODE_PB,
    PREFILL_PB,
    advance,
    decisions,
    eventually,
    pd_spec,
    push_load,
    start_replica,
)


def _plan_counts(plan: pb.WhatIfPlan) -> dict[tuple[int, int], int]:
    return {(p.pool.stage, p.pool.operator): p.replicas for p in plan.pools}


async def test_what_if_by_name_and_inline(runtime: Runtime) -> None:
    replica = await start_replica(runtime, "r1")
    stub = replica.stub
    try:
        await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("chat")), timeout=5)
        load = pb.HypotheticalLoad(requests_per_s=10, input_tokens=512, output_tokens=256)
        reply = await stub.WhatIf(pb.WhatIfRequest(deployment="chat", load=load), timeout=10)
        # pd: decode 10 req/s × 256 tokens = 2560 tok/s → ceil(2560 / 1000) = 3; prefill ceil(3 × 0.5) = 2.
        assert [p.policy_name for p in reply.plans] == ["pd"]
        assert _plan_counts(reply.plans[0]) == {DECODE_PB: 3, PREFILL_PB: 2}
        assert reply.plans[0].reasons

        static = static_spec_pb("fixed", {"decode/model": 7}, interval_s=0.0)
        reply = await stub.WhatIf(pb.WhatIfRequest(spec=static, load=load), timeout=10)
        assert _plan_counts(reply.plans[0]) == {DECODE_PB: 7}
        # A policy the spec cannot configure comes back as infeasible data, not an error.
        reply = await stub.WhatIf(pb.WhatIfRequest(spec=static, load=load, policy_names=["pd"]), timeout=10)
        assert reply.plans[0].infeasible and not reply.plans[0].pools
        # Nothing was recorded for a what-if.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetDeployment(pb.GetDeploymentRequest(name="fixed"), timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        await replica.stop()


@pytest.mark.parametrize(
    ("load", "field"),
    [
        (pb.HypotheticalLoad(requests_per_s=0, input_tokens=10, output_tokens=10), "load.requests_per_s"),
        (
            pb.HypotheticalLoad(requests_per_s=math.nan, input_tokens=10, output_tokens=10),
            "load.requests_per_s",
        ),
        (pb.HypotheticalLoad(requests_per_s=1, input_tokens=-1, output_tokens=10), "load.input_tokens"),
        (pb.HypotheticalLoad(requests_per_s=1, input_tokens=10, output_tokens=0), "load.output_tokens"),
    ],
)
async def test_what_if_rejects_bad_loads(runtime: Runtime, load: pb.HypotheticalLoad, field: str) -> None:
    replica = await start_replica(runtime, "r1")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await replica.stub.WhatIf(pb.WhatIfRequest(spec=pd_spec("x"), load=load), timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            good = pb.HypotheticalLoad(requests_per_s=1, input_tokens=1, output_tokens=1)
            await replica.stub.WhatIf(pb.WhatIfRequest(deployment="nope", load=good), timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        await replica.stop()


async def test_tick_telemetry(runtime: Runtime, spans: InMemorySpanExporter) -> None:
    replica = await start_replica(runtime, "r1")
    try:
        await replica.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("seen")), timeout=5)
        await eventually(lambda: decisions(replica.stub, "seen"))
        await push_load(runtime, "seen", decode_tps=2000)
        advance(runtime, 1)
        await eventually(lambda: _at_least(replica, 2))
        # Per-deployment and per-pool gauges of the latest decision (push_load: 2,000 decode tokens/s,
        # TTFT 100 ms and TBT 10 ms against the 1,000/100 ms SLO); the loop sets them just after
        # recording the decision waited for above.
        value = runtime.telemetry.registry.get_sample_value
        seen = {"deployment": "seen"}
        await eventually(lambda: (value("opscale_deployment_decode_tokens_per_second", seen) or 0) > 0)
        assert value("opscale_deployment_decode_tokens_per_second", seen) == pytest.approx(2000, rel=0.05)
        assert value("opscale_deployment_ttft_slo_seconds", seen) == pytest.approx(1.0)
        assert value("opscale_deployment_tbt_slo_seconds", seen) == pytest.approx(0.1)
        assert value("opscale_deployment_tbt_p99_seconds", seen) == pytest.approx(0.010, rel=0.2)
        for signal in ("ttft", "tbt"):
            assert value("opscale_deployment_slo_attainment_ratio", {**seen, "signal": signal}) == 1.0
        assert value("opscale_deployment_slo_attainment_target_ratio", seen) == pytest.approx(0.99)
        lag = value("opscale_deployment_decision_lag_seconds", seen)
        assert lag is not None and 0 <= lag <= 1  # the virtual clock sits at the latest slot
        decode = {**seen, "stage": "decode", "operator": "model"}
        assert (value("opscale_pool_replicas_decided", decode) or 0) >= 1
        assert (value("opscale_pool_gpus_decided", decode) or 0) >= 1
    finally:
        await replica.stop()
    per_deployment = [s for s in spans.get_finished_spans() if s.name == "decision.deployment"]
    assert per_deployment and per_deployment[0].attributes
    assert per_deployment[0].attributes["deployment"] == "seen"
    assert any(s.name == "decision.tick" for s in spans.get_finished_spans())
    registry = runtime.telemetry.registry
    assert (
        registry.get_sample_value("opscale_decisions_total", {"policy": "pd", "outcome": "applied"}) or 0
    ) >= 1
    assert (registry.get_sample_value("opscale_decision_tick_seconds_count") or 0) >= 2
    assert (
        registry.get_sample_value("opscale_decision_leases_held", {"replica": "r1"}) == 0
    )  # released on stop


async def _at_least(replica: object, n: int) -> bool:
    return len(await decisions(replica.stub, "seen")) >= n  # type: ignore[attr-defined]
