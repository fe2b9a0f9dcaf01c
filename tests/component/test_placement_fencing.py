"""Placement refuses a hand-off whose decision was made under a lease epoch that is no longer current:
a decision leader deposed after recording a decision (it hung before handing it over, another replica
took the lease) must not have that stale decision applied when it wakes up (issue 14, fencing)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
import sqlalchemy as sa

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.db.models import Decision
from opscale.db.repo import DeploymentRepo
from opscale.lease import DECISION, take_epochs
from opscale.services.runtime import Runtime
from tests.component.conftest import Serve

DECODE = cpb.PoolKey(stage=cpb.STAGE_DECODE, operator=cpb.OPERATOR_KIND_MODEL)


async def _decision(runtime: Runtime, epoch: int) -> str:
    async with runtime.sessions() as session, session.begin():
        row = Decision(
            deployment="chat",
            spec_version=1,
            tick_at=datetime(2026, 12, 3, 0, 0, epoch, tzinfo=UTC),  # one slot per epoch
            policy="static",
            policy_version="1",
            inputs={},
            outputs={},
            reasons=[],
            predicted={},
            stabilizer={},
            leader_id="a",
            lease_epoch=epoch,
        )
        session.add(row)
        await session.flush()
        return str(row.id)


async def test_a_deposed_leaders_late_hand_off_is_refused(runtime: Runtime, serve: Serve) -> None:
    spec = {"name": "chat", "model": {"preset": "llama3-8b"}, "slo": {"ttft_ms": 1000, "tbt_ms": 100}}
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session, clock=runtime.clock).create("chat", spec, "test")
        (epoch,) = (await take_epochs(session, DECISION, ["chat"], "a")).values()  # a leads
    by_a = await _decision(runtime, epoch)
    stub = placement_pb2_grpc.PlacementServiceStub(await serve("placement"))
    plan = cpb.PoolPlan(pool=DECODE, replicas=1, gpus_per_replica=1, batch_size=8)

    def apply(decision_id: str) -> ppb.ApplyDesiredRequest:
        return ppb.ApplyDesiredRequest(
            deployment="chat", spec_version=1, decision_id=decision_id, pools=[plan]
        )

    await stub.ApplyDesired(apply(by_a), timeout=10)  # a still leads: accepted
    async with runtime.sessions() as session, session.begin():
        await take_epochs(session, DECISION, ["chat"], "b")  # b took the lease over
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApplyDesired(apply(by_a), timeout=10)  # a wakes and hands its decision over late
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "decision_id" in (info.value.details() or "") and "lost its lease" in (info.value.details() or "")
    by_b = await _decision(runtime, epoch + 1)
    await stub.ApplyDesired(apply(by_b), timeout=10)
    await stub.ApplyDesired(apply(""), timeout=10)  # no decision (an operator's call): not fenced
    async with runtime.sessions() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(Decision))).scalar_one() == 2
