"""The decision loop over real gRPC, on both backend pairs: a spec and load in, a decision recorded,
listed, explained and streamed; fail-static on silence; NOT_FOUND for unknown deployments; history
across a restart; the placement hand-off's outcome on the decision."""

from __future__ import annotations

import sqlite3
from typing import Any

import grpc
import pytest

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.db.repo import DeploymentRepo
from opscale.grpcutil.server import start_service, stop_service
from opscale.services.catalog import SERVICES
from opscale.services.decision import loop as loop_module
from opscale.services.decision.actuators import NodeAgentActuator
from opscale.services.runtime import Runtime
from tests.component.decision_kit import (
    DECODE_PB,
    PREFILL_PB,
    FakeActuator,
    NoLease,
    advance,
    counts,
    decisions,
    eventually,
    pd_spec,
    push_load,
    start_replica,
)

PENDING = pb.PLACEMENT_OUTCOME_PENDING


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


async def test_decision_recorded_listed_explained_and_streamed(runtime: Runtime) -> None:
    placement = FakeActuator()
    replica = await start_replica(runtime, "r1", placement)
    stub = replica.stub
    try:
        await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("chat")), timeout=5)
        await eventually(lambda: decisions(stub, "chat"))  # the first slot: no load yet, held
        watch = stub.WatchDecisions(pb.WatchDecisionsRequest(deployments=["chat"]), timeout=10)
        await eventually(lambda: replica.service.hub.watching)
        await push_load(runtime, "chat", decode_tps=4000)
        advance(runtime, 1)
        await eventually(lambda: _newest_has(stub, "chat", {DECODE_PB: 4, PREFILL_PB: 2}))

        got = (await stub.GetDecision(pb.GetDecisionRequest(deployment="chat"), timeout=5)).decision
        # pd: ceil(4000 decode tok/s / 1000 per instance) = 4 decode; prefill ceil(4 × 0.5) = 2.
        assert counts(got) == {DECODE_PB: 4, PREFILL_PB: 2}
        assert got.policy == "pd" and got.leader_id == "r1" and got.spec_version == 1
        assert got.tick_ms % 1000 == 0  # a 1 s slot
        assert got.load.decode_tokens_per_s == pytest.approx(4000)
        assert not got.load.stale and got.reasons
        assert got.placement_outcome == pb.PLACEMENT_OUTCOME_APPLIED
        assert placement.calls[-1][:2] == ("chat", got.id)

        listed = await decisions(stub, "chat")
        assert listed[0].id == got.id
        streamed = await watch.read()
        if streamed.decision.id != got.id:  # the first slot's, published just after we subscribed
            assert int(streamed.decision.id) < int(got.id)
            streamed = await watch.read()
        assert streamed.decision.id == got.id
        explained = await stub.ExplainDecision(pb.ExplainDecisionRequest(deployment="chat"), timeout=5)
        text = "\n".join(explained.narrative)
        assert explained.decision.id == got.id
        assert "Inputs:" in text and "Policy: pd" in text and "decode/model 4" in text
        assert "Placement: APPLIED" in text
        assert {e.pool.stage for e in explained.estimates} == {DECODE_PB[0], PREFILL_PB[0]}
        watch.cancel()
    finally:
        await replica.stop()


async def test_silence_is_held_fail_static_never_scaled_in(runtime: Runtime) -> None:
    reader = await start_replica(runtime, "reader", lease=NoLease("reader"))  # serves reads, leads nothing
    try:
        await reader.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("quiet")), timeout=5)
        code, details = await _code(
            reader.stub.GetDecision(pb.GetDecisionRequest(deployment="quiet"), timeout=5)
        )
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "no decision yet" in details
    finally:
        await reader.stop()
    replica = await start_replica(runtime, "r1")
    stub = replica.stub
    try:
        advance(runtime, 1)  # an empty counter store: recorded, held, flagged stale
        await eventually(lambda: decisions(stub, "quiet"))
        first = (await decisions(stub, "quiet"))[0]
        assert first.load.stale and any("fail-static" in r for r in first.reasons)

        await push_load(runtime, "quiet", decode_tps=3000)
        advance(runtime, 1)
        await eventually(lambda: _newest_has(stub, "quiet", {DECODE_PB: 3, PREFILL_PB: 2}))

        n = len(await decisions(stub, "quiet"))
        advance(runtime, 60)  # the load stops: every signal goes stale (max_staleness_s 10)
        await eventually(lambda: _more_than(stub, "quiet", n))
        held = (await decisions(stub, "quiet"))[0]
        assert held.load.stale
        assert counts(held) == {DECODE_PB: 3, PREFILL_PB: 2}  # held, not scaled in to zero
        assert held.placement_outcome == pb.PLACEMENT_OUTCOME_NOT_NEEDED
    finally:
        await replica.stop()


async def test_min_replicas_holds_from_the_first_tick_without_load(runtime: Runtime) -> None:
    placement = FakeActuator()
    replica = await start_replica(runtime, "r1", placement)
    spec = pd_spec("floor")
    spec.limits.add(min_replicas=2)  # every pool: at least 2, before any load was ever reported
    try:
        await replica.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=spec), timeout=5)
        await eventually(lambda: decisions(replica.stub, "floor"))
        first = (await decisions(replica.stub, "floor"))[-1]  # the very first decision recorded
        # No signal yet, and still the floor. Prefill follows decode at 0.5 and has its own floor of 2,
        # so decode needs the smallest L with ceil(L × 0.5) >= 2: 3 decode, 2 prefill.
        assert first.load.stale
        assert counts(first) == {DECODE_PB: 3, PREFILL_PB: 2}
        assert any("min_replicas 2" in r for r in first.reasons)
        await eventually(lambda: placement.calls)  # handed to placement (after it was recorded)
        assert placement.calls[0][0] == "floor" and sorted(placement.calls[0][2].values()) == [2, 3]
    finally:
        await replica.stop()


async def _newest_has(stub: object, name: str, want: dict[tuple[int, int], int]) -> bool:
    """The newest decision has these counts and placement's answer is recorded on it."""
    found = await decisions(stub, name)  # type: ignore[arg-type]
    return bool(found) and counts(found[0]) == want and found[0].placement_outcome != PENDING


async def _more_than(stub: object, name: str, n: int) -> bool:
    found = await decisions(stub, name)  # type: ignore[arg-type]
    return len(found) > n and found[0].placement_outcome != PENDING


async def test_unknown_deployment_is_not_found(runtime: Runtime) -> None:
    replica = await start_replica(runtime, "r1")
    stub = replica.stub
    try:
        for call in (
            stub.GetDecision(pb.GetDecisionRequest(deployment="nope"), timeout=5),
            stub.ListDecisions(pb.ListDecisionsRequest(deployment="nope"), timeout=5),
            stub.ExplainDecision(pb.ExplainDecisionRequest(deployment="nope"), timeout=5),
        ):
            code, details = await _code(call)
            assert code is grpc.StatusCode.NOT_FOUND and "nope" in details
        stream = stub.WatchDecisions(pb.WatchDecisionsRequest(deployments=["nope"]), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.read()
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        code, details = await _code(stub.GetDecision(pb.GetDecisionRequest(), timeout=5))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "deployment" in details
    finally:
        await replica.stop()


async def test_history_pages_and_survives_a_restart(runtime: Runtime) -> None:
    first = await start_replica(runtime, "r1")
    try:
        await first.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("kept")), timeout=5)
        for _ in range(3):
            n = len(await decisions(first.stub, "kept"))
            advance(runtime, 1)
            await eventually(lambda n=n: _more_than(first.stub, "kept", n))  # type: ignore[misc]
        before = await decisions(first.stub, "kept")
    finally:
        await first.stop()
    second = await start_replica(runtime, "r2")
    try:
        after = await decisions(second.stub, "kept")
        assert [d.id for d in after] == [d.id for d in before] and len(after) >= 3
        ticks = [d.tick_ms for d in after]
        assert ticks == sorted(ticks, reverse=True) and len(set(ticks)) == len(ticks)
        page = await second.stub.ListDecisions(
            pb.ListDecisionsRequest(deployment="kept", page={"page_size": 2}), timeout=5
        )
        assert [d.id for d in page.decisions] == [d.id for d in after[:2]] and page.next_page_token
        rest = await second.stub.ListDecisions(
            pb.ListDecisionsRequest(
                deployment="kept", page={"page_size": 100, "page_token": page.next_page_token}
            ),
            timeout=5,
        )
        assert [d.id for d in rest.decisions] == [d.id for d in after[2:]] and not rest.next_page_token
        old = await second.stub.ExplainDecision(
            pb.ExplainDecisionRequest(deployment="kept", decision_id=after[-1].id), timeout=5
        )
        assert old.decision.id == after[-1].id
    finally:
        await second.stop()


async def test_placement_failures_are_recorded_not_dropped(runtime: Runtime) -> None:
    placement_def = SERVICES["placement"].build(runtime)
    placement = await start_service(placement_def, "127.0.0.1", 0, runtime.telemetry)
    live = await start_replica(runtime, "r1", NodeAgentActuator(f"127.0.0.1:{placement.port}"))
    try:
        await live.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("handed")), timeout=5)
        await eventually(lambda: decisions(live.stub, "handed"))
        await push_load(runtime, "handed", decode_tps=2000)
        advance(runtime, 1)
        await eventually(lambda: _newest_has(live.stub, "handed", {DECODE_PB: 2, PREFILL_PB: 1}))
        got = (await live.stub.GetDecision(pb.GetDecisionRequest(deployment="handed"), timeout=5)).decision
        # No node has registered: placement takes the counts and places none of them.
        assert got.placement_outcome == pb.PLACEMENT_OUTCOME_PARTIAL
        assert "decode/model placed 0 of 2" in got.placement_message
        # The next tick, with the same counts, hands over again and still says what is missing (never
        # "not needed", which would hide the replicas that were never placed).
        n = len(await decisions(live.stub, "handed"))
        advance(runtime, 1)
        await eventually(lambda: _more_than(live.stub, "handed", n))
        again = (await live.stub.GetDecision(pb.GetDecisionRequest(deployment="handed"), timeout=5)).decision
        assert again.id != got.id and again.placement_outcome == pb.PLACEMENT_OUTCOME_PARTIAL
        assert "decode/model placed 0 of 2" in again.placement_message
    finally:
        await live.stop()
        await stop_service(placement, 1.0)

    # Nobody listening at all: UNAVAILABLE, recorded as FAILED with the reason, retried next tick.
    down = await start_replica(runtime, "r2", NodeAgentActuator("127.0.0.1:9", deadline_s=0.5))
    try:
        n = len(await decisions(down.stub, "handed"))
        await push_load(runtime, "handed", decode_tps=5000)
        advance(runtime, 1)
        await eventually(lambda: _more_than(down.stub, "handed", n))
        got = (await down.stub.GetDecision(pb.GetDecisionRequest(deployment="handed"), timeout=5)).decision
        assert got.placement_outcome == pb.PLACEMENT_OUTCOME_FAILED
        assert "UNAVAILABLE" in got.placement_message
        explained = await down.stub.ExplainDecision(pb.ExplainDecisionRequest(deployment="handed"), timeout=5)
        assert any("Placement: FAILED" in line for line in explained.narrative)
    finally:
        await down.stop()


async def test_freeze_holds_and_watch_sends_current_first(runtime: Runtime) -> None:
    replica = await start_replica(runtime, "r1")
    stub = replica.stub
    try:
        await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("icy")), timeout=5)
        await eventually(lambda: decisions(stub, "icy"))
        await push_load(runtime, "icy", decode_tps=2000)
        advance(runtime, 1)
        await eventually(lambda: _newest_has(stub, "icy", {DECODE_PB: 2, PREFILL_PB: 1}))

        watch = stub.WatchDecisions(pb.WatchDecisionsRequest(include_current=True), timeout=10)
        current = await watch.read()  # every deployment's newest decision first
        assert current.decision.deployment == "icy" and counts(current.decision) == {
            DECODE_PB: 2,
            PREFILL_PB: 1,
        }

        await stub.FreezeDeployment(pb.FreezeDeploymentRequest(name="icy", reason="incident"), timeout=5)
        n = len(await decisions(stub, "icy"))
        await push_load(runtime, "icy", decode_tps=9000)  # would be 9 + 5 if it were not frozen
        advance(runtime, 1)
        await eventually(lambda: _more_than(stub, "icy", n))
        frozen = (await decisions(stub, "icy"))[0]
        assert frozen.frozen and counts(frozen) == {DECODE_PB: 2, PREFILL_PB: 1}
        assert {e.rule for e in frozen.stabilizer_effects} == {"frozen"}
        assert frozen.placement_outcome == pb.PLACEMENT_OUTCOME_NOT_NEEDED
        streamed = await watch.read()
        assert streamed.decision.id == frozen.id
        watch.cancel()
    finally:
        await replica.stop()


async def test_a_broken_deployment_is_skipped_and_the_rest_decided(runtime: Runtime) -> None:
    # A stored spec the current code cannot use (written before a validation rule existed, say).
    async with runtime.sessions() as session, session.begin():
        await DeploymentRepo(session).create("broken", {"name": "broken", "policy": "no-such"}, "test")
    replica = await start_replica(runtime, "r1")
    stub = replica.stub
    try:
        await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec("fine")), timeout=5)
        await eventually(lambda: decisions(stub, "fine"))
        n = len(await decisions(stub, "fine"))
        advance(runtime, 1)
        await eventually(lambda: _more_than(stub, "fine", n))
        code, _ = await _code(stub.GetDecision(pb.GetDecisionRequest(deployment="broken"), timeout=5))
        assert code is grpc.StatusCode.FAILED_PRECONDITION  # exists, never decided
        errors = runtime.telemetry.registry.get_sample_value(
            "opscale_decision_deployment_errors_total", {"stage": "spec"}
        )
        assert errors == 1  # said once, not every tick
    finally:
        await replica.stop()


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
async def test_policies_are_built_after_the_read_lets_go_of_the_sqlite_lock(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop's scan must not hold SQLite's write lock while it builds policies (CPU work): with 48 new
    # specs at once a CreateDeployment waited past the busy timeout (UNAVAILABLE on CI). Each build
    # here checks that a writer could start right now.
    path = runtime.settings.database_url.removeprefix("sqlite:///")
    locked: list[str] = []
    built: list[str] = []
    real = loop_module.setup_for

    def building(spec: Any) -> Any:
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
        except sqlite3.OperationalError as exc:
            locked.append(f"{spec.name}: {exc}")
        finally:
            probe.close()
        built.append(spec.name)
        return real(spec)

    monkeypatch.setattr(loop_module, "setup_for", building)
    # The specs go in first, through a replica that never leads: no writer but the loop's own is left.
    writer = await start_replica(runtime, "r0", lease=NoLease("r0"))
    try:
        for name in ("a", "b", "c"):
            await writer.stub.CreateDeployment(pb.CreateDeploymentRequest(spec=pd_spec(name)), timeout=5)
    finally:
        await writer.stop()
    replica = await start_replica(runtime, "r1")  # no RPC while it builds: a read would be a writer
    try:
        await eventually(lambda: len(built) >= 3)
        assert sorted(built) == ["a", "b", "c"] and locked == []
    finally:
        await replica.stop()
