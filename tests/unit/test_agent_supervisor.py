"""The supervisor with real (tiny) processes: start, dedupe, reject, crash/restart/fail, stop with
SIGTERM then SIGKILL, and adoption after an agent restart that never starts a twin."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opscale.actuation import ReplicaCommand, StopReplica
from opscale.agent.state import proc_start_time
from opscale.agent.supervisor import Phase, Supervisor
from opscale.agent.templates import Template
from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.common.v1 import common_pb2
from opscale.wire.commands import command_from_pb
from tests.builders import until

SLEEPER = Template("sleeper", (sys.executable, "-c", "import time; time.sleep(60)"))
STUBBORN = Template(
    "stubborn",
    (
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ),
)
CRASHER = Template("crasher", (sys.executable, "-c", "import sys; sys.exit(3)"))
ENV_DUMP = Template("env", (sys.executable, "-c", "import time; time.sleep(60)"), env={"WHO": "{replica_id}"})
TEMPLATES = {t.name: t for t in (SLEEPER, STUBBORN, CRASHER, ENV_DUMP)}


def start(replica: str, template: str, gpus: list[int], generation: int = 1) -> ReplicaCommand:
    return command_from_pb(
        apb.Command(
            command_id="1",
            replica_id=replica,
            generation=generation,
            start=apb.StartReplica(
                deployment="d",
                pool=common_pb2.PoolKey(stage=common_pb2.STAGE_DECODE, operator=common_pb2.OPERATOR_KIND_FFN),
                template=template,
                gpu_indices=gpus,
            ),
        )
    )


def stop(replica: str, generation: int, grace_s: float = 5.0) -> ReplicaCommand:
    return StopReplica(replica, generation, grace_s)


class Harness:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.events: list[apb.ReplicaStatus] = []
        self.supervisors: list[Supervisor] = []

    def new(self, **kwargs: float) -> Supervisor:
        sup = Supervisor("n1", TEMPLATES, self.state_dir, frozenset({0, 1, 2, 3}), self.events.append,
                         max_restarts=int(kwargs.get("max_restarts", 2)),
                         restart_backoff_s=kwargs.get("backoff", 0.05))  # fmt: skip
        self.supervisors.append(sup)
        return sup

    def states(self, replica: str) -> list[int]:
        return [e.state for e in self.events if e.replica_id == replica]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path / "agent")
    try:
        yield h
    finally:
        for sup in h.supervisors:
            for managed in list(sup.replicas.values()):
                await sup.terminate(managed, 0.0)


async def test_start_is_idempotent_and_sets_gpus_and_identity(harness: Harness) -> None:
    sup = harness.new()
    assert await sup.apply(start("r1", "env", [1, 3])) == (apb.ACK_STATUS_ACCEPTED, "")
    pid = sup.replicas["r1"].state.pid
    environ = dict(
        kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in kv
    )
    assert environ["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert environ["OPSCALE_REPLICA_ID"] == "r1" and environ["WHO"] == "r1"
    assert environ["OPSCALE_STAGE"] == "decode" and environ["OPSCALE_OPERATOR"] == "ffn"
    # The same (replica, generation) again is a no-op: no second process.
    status, _ = await sup.apply(start("r1", "env", [1, 3]))
    assert status == apb.ACK_STATUS_ACCEPTED and sup.replicas["r1"].state.pid == pid
    await sup.tick()
    assert sup.replicas["r1"].phase is Phase.READY  # no probe configured: alive is ready


async def test_bad_commands_are_rejected_with_reasons(harness: Harness) -> None:
    sup = harness.new()
    status, message = await sup.apply(start("r1", "vllm", [0]))
    assert status == apb.ACK_STATUS_REJECTED and "unknown launch template 'vllm'" in message
    assert "sleeper" in message
    status, message = await sup.apply(start("r2", "sleeper", [7]))
    assert status == apb.ACK_STATUS_REJECTED and "[7]" in message
    assert not sup.replicas


async def test_crash_restarts_with_backoff_then_fails(harness: Harness) -> None:
    sup = harness.new(max_restarts=2, backoff=0.05)
    await sup.apply(start("r1", "crasher", [0]))

    async def failed() -> bool:
        await sup.tick()
        return "r1" not in sup.replicas

    await until(failed)
    states = harness.states("r1")
    # start, crash (restart 1), start, crash (restart 2), start, crash -> failed (3 > 2 allowed)
    assert states.count(apb.REPLICA_PROCESS_STATE_CRASHED) == 2
    assert states[-1] == apb.REPLICA_PROCESS_STATE_FAILED
    last = harness.events[-1]
    assert last.restarts == 3 and "exited with code 3" in last.message and last.exit_code == 3


async def test_stop_escalates_to_sigkill_after_the_grace(harness: Harness) -> None:
    sup = harness.new()
    await sup.apply(start("r1", "stubborn", [0]))
    await asyncio.sleep(0.3)  # let it install its SIGTERM handler
    pid = sup.replicas["r1"].state.pid
    await sup.apply(stop("r1", 2, grace_s=0.3))
    await until(lambda: "r1" not in sup.replicas)
    assert proc_start_time(pid) is None
    assert harness.states("r1")[-1] == apb.REPLICA_PROCESS_STATE_STOPPED
    # A stop for something not running is acknowledged (stopped is the truth), not an error.
    assert (await sup.apply(stop("ghost", 3)))[0] == apb.ACK_STATUS_ACCEPTED


async def test_restarted_agent_adopts_instead_of_starting_twins(harness: Harness) -> None:
    first = harness.new()
    await first.apply(start("r1", "sleeper", [0]))
    await first.apply(start("r2", "sleeper", [1]))
    pids = {r: m.state.pid for r, m in first.replicas.items()}
    # The agent dies (no clean-up); r2's process dies while it is down.
    os.kill(pids["r2"], signal.SIGKILL)
    first.replicas["r2"].proc.wait()  # type: ignore[union-attr]
    second = harness.new()
    running = second.adopt()
    assert [(r.replica_id, r.pid) for r in running] == [("r1", pids["r1"])]
    # Placement re-sends the start it may not have seen acked: a no-op, still one process.
    assert (await second.apply(start("r1", "sleeper", [0])))[0] == apb.ACK_STATUS_ACCEPTED
    assert second.replicas["r1"].state.pid == pids["r1"]
    # It supervises the adopted process like its own: stop works through the pid + start time.
    await second.apply(stop("r1", 2, grace_s=1.0))
    await until(lambda: "r1" not in second.replicas)
    assert proc_start_time(pids["r1"]) is None
    first.replicas.clear()


async def test_a_reused_pid_is_never_adopted(harness: Harness) -> None:
    first = harness.new()
    await first.apply(start("r1", "sleeper", [0]))
    managed = first.replicas["r1"]
    managed.state.start_time += 1  # as if the pid now belonged to another process
    first._save()
    assert harness.new().adopt() == []
    managed.state.start_time -= 1
