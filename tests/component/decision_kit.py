"""Builders for the decision-service component tests: a decision replica on port 0 whose loop wakes on
real time (every few ms) and decides on the test's ``VirtualClock``, load written through the ingest
write path, and a placement double."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import grpc

from opscale.actuation import Actuation, Actuator, Outcome, ResizePool
from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.clock import VirtualClock
from opscale.grpcutil.server import RunningService, start_service, stop_service
from opscale.policy.types import PoolKey
from opscale.services.decision.lease import Lease
from opscale.services.decision.loop import LoopOptions
from opscale.services.decision.wiring import DecisionService, build_service
from opscale.services.runtime import Runtime
from opscale.signals.samples import Latency, LatencyKind, Sample, Throughput
from opscale.signals.writes import samples_to_writes
from opscale.spec import OperatorKind, PoolRef, Stage
from tests.builders import struct, until

WINDOW_S = 5.0


@dataclass
class FakeActuator:
    """Answers every hand-off with ``outcome``; remembers what it was handed."""

    outcome: Outcome = Outcome.APPLIED
    calls: list[tuple[str, str, dict[PoolKey, int]]] = field(default_factory=list)

    async def actuate(
        self, deployment: str, spec_version: int, decision_id: str, resize: Sequence[ResizePool]
    ) -> Actuation:
        self.calls.append((deployment, decision_id, {r.pool: r.replicas for r in resize}))
        return Actuation(self.outcome, f"fake placement: {self.outcome.value}")

    async def close(self) -> None:
        return None


@dataclass
class Replica:
    service: DecisionService
    running: RunningService
    channel: grpc.aio.Channel

    @property
    def stub(self) -> decision_pb2_grpc.DecisionServiceStub:
        return decision_pb2_grpc.DecisionServiceStub(self.channel)

    async def stop(self) -> None:
        await self.channel.close(None)
        await stop_service(self.running, 1.0)


class NoLease:
    """A lease that is never granted: a replica that only serves reads."""

    def __init__(self, holder_id: str) -> None:
        self.holder_id = holder_id

    async def sync(self, wanted: Collection[str]) -> frozenset[str]:
        return frozenset()

    namespace = "decision"
    ttl_s = math.inf

    def epoch(self, name: str) -> int | None:
        return None

    async def renew(self) -> None:
        return None

    async def release_all(self) -> None:
        return None


async def start_replica(
    runtime: Runtime, name: str, actuator: Actuator | None = None, lease: Lease | None = None
) -> Replica:
    async def pace(_seconds: float) -> None:
        await asyncio.sleep(0.01)  # real time; the virtual clock moves only when the test says so

    service = build_service(
        runtime,
        options=LoopOptions(replica_id=name, wake_s=0.01, window_wanted_s=WINDOW_S),
        actuator=actuator or FakeActuator(),
        lease=lease,
        pace=pace,
        tail_poll_s=0.01,
    )
    running = await start_service(service.definition, "127.0.0.1", 0, runtime.telemetry)
    return Replica(service, running, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"))


def pd_spec(name: str, interval_s: float = 1.0) -> pb.DeploymentSpec:
    return pb.DeploymentSpec(
        name=name,
        model=pb.ModelRef(preset="llama3-8b"),
        policy_name="pd",
        mode=pb.SERVING_MODE_DISAGGREGATED,
        slo=pb.Slo(ttft_ms=1000, tbt_ms=100),
        interval_s=interval_s,
        stabilization=pb.Stabilization(
            scale_up_cooldown_s=0, scale_down_cooldown_s=0, scale_down_window_s=0, max_staleness_s=10
        ),
        params=struct({"target_decode_tokens_per_s_per_instance": 1000, "prefill_per_decode": 0.5}),
    )


DECODE = PoolRef(stage=Stage.DECODE, operator=OperatorKind.MODEL)


async def push_load(runtime: Runtime, deployment: str, decode_tps: float) -> None:
    """A window's worth of load ending one second from now (the test then advances the clock by 1 s
    and the next slot's window covers exactly it): ``decode_tps`` spread over the whole window, healthy
    latencies (TTFT 100 ms, TBT 10 ms against the 1000/100 ms SLO)."""
    end = runtime.clock.now() + 1
    samples = [
        Sample(deployment, end, Throughput(decode_tps, decode_tps * 4, WINDOW_S), pool=DECODE),
        Sample(deployment, end - 1, Latency(LatencyKind.TTFT, 100.0, 20)),
        Sample(deployment, end - 1, Latency(LatencyKind.TBT, 10.0, 20)),
    ]
    await runtime.counters.apply(samples_to_writes(samples, runtime.counters.settings), now_s=end)


def advance(runtime: Runtime, seconds: float) -> None:
    clock = runtime.clock
    assert isinstance(clock, VirtualClock)
    clock.advance(seconds)


async def eventually(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait (real time) until ``check()`` (sync or async) is truthy: ``until`` at the loop's pace."""
    await until(check, timeout_s, poll_s=0.01)  # type: ignore[arg-type]


async def decisions(stub: decision_pb2_grpc.DecisionServiceStub, deployment: str) -> list[pb.Decision]:
    reply = await stub.ListDecisions(pb.ListDecisionsRequest(deployment=deployment), timeout=5)
    return list(reply.decisions)


def counts(decision: pb.Decision) -> dict[tuple[int, int], int]:
    return {(p.pool.stage, p.pool.operator): p.replicas for p in decision.pools}


DECODE_PB = (cpb.STAGE_DECODE, cpb.OPERATOR_KIND_MODEL)
PREFILL_PB = (cpb.STAGE_PREFILL, cpb.OPERATOR_KIND_MODEL)
