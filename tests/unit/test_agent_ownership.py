"""Who owns a state directory and its workers (issue 14): one agent per directory (flock), a default
directory per node name, unique temporary names for the state file, workers stopped with the agent
unless kept for an upgrade, and `cleanup` for the workers of an agent that is gone."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from opscale.agent.cleanup import cleanup
from opscale.agent.state import ReplicaState, StateDirLocked, StateFile, StateLock, proc_start_time
from opscale.agent.supervisor import Supervisor
from opscale.cli.agent import state_dir_of
from opscale.config import load_settings
from opscale.errors import ConfigError
from tests.unit.test_agent_supervisor import TEMPLATES, start

HOLD_LOCK = """
import sys, time
from pathlib import Path
from opscale.agent.state import StateLock
lock = StateLock(Path(sys.argv[1]))  # kept referenced: closing the file would drop the lock
lock.acquire("the agent of node n1")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_owner_of_a_state_directory_is_refused_naming_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateDirLocked) as caught:
            StateLock(tmp_path).acquire("the agent of node n2")
        assert str(tmp_path) in caught.value.message
        assert f"the agent of node n1 (pid {holder.pid})" in caught.value.message
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the lock with its holder (even killed with SIGKILL): no stale lock.
    lock = StateLock(tmp_path)
    lock.acquire("the agent of node n2")
    lock.release()
    again = StateLock(tmp_path)
    again.acquire("x")  # released: free again
    again.release()


def test_the_state_file_survives_concurrent_writers(tmp_path: Path) -> None:
    # Before issue 14 every writer used replicas.tmp: one renamed the other's file away and the second
    # os.replace raised FileNotFoundError. Unique temporary names make concurrent saves safe.
    state = StateFile(tmp_path)
    replica = ReplicaState("r1", 1, "sleeper", "d", "decode", "ffn", [0], {}, 1234)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(200):
                state.save({"r1": replica})
        except BaseException as exc:  # the test reports whatever a writer hit
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(state.load()) == ["r1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replicas.json"]  # no temporary left behind


def test_the_default_state_directory_is_per_node() -> None:
    assert state_dir_of(load_settings(None), "gpu-0") == Path(".opscale/agent/gpu-0")
    assert state_dir_of(load_settings(None), "gpu-1") != state_dir_of(load_settings(None), "gpu-0")
    given = load_settings(None, agent_state_dir=Path("/var/lib/opscale"))
    assert state_dir_of(given, "gpu-0") == Path("/var/lib/opscale")
    with pytest.raises(ConfigError, match=r"node name '\.\./x' cannot name a state directory"):
        state_dir_of(load_settings(None), "../x")


async def _supervisor_with_two_workers(state_dir: Path) -> tuple[Supervisor, list[int]]:
    sup = Supervisor("n1", TEMPLATES, state_dir, frozenset({0, 1}), lambda _status: None)
    for rid, gpu in (("r1", 0), ("r2", 1)):
        await sup.apply(start(rid, "sleeper", [gpu]))
    return sup, [m.state.pid for m in sup.replicas.values()]


async def test_closing_the_supervisor_stops_its_workers(tmp_path: Path) -> None:
    sup, pids = await _supervisor_with_two_workers(tmp_path)
    await sup.close(grace_s=2.0)
    assert [proc_start_time(pid) for pid in pids] == [None, None]
    assert StateFile(tmp_path).load() == {}


async def test_keep_workers_leaves_them_for_adoption_and_cleanup_stops_them(tmp_path: Path) -> None:
    sup, pids = await _supervisor_with_two_workers(tmp_path)
    await sup.close(keep_workers=True)
    assert all(proc_start_time(pid) is not None for pid in pids)
    # The next agent adopts them (the upgrade path)...
    successor = Supervisor("n1", TEMPLATES, tmp_path, frozenset({0, 1}), lambda _status: None)
    assert sorted(r.pid for r in successor.adopt()) == sorted(pids)
    await successor.close(keep_workers=True)
    # ...and when no agent comes back, cleanup stops exactly them; refused while an agent holds the dir.
    lock = StateLock(tmp_path)
    lock.acquire("the agent of node n1")
    with pytest.raises(StateDirLocked, match="in use by the agent of node n1"):
        cleanup(tmp_path, grace_s=2.0)
    assert all(proc_start_time(pid) is not None for pid in pids)
    lock.release()
    done = cleanup(tmp_path, grace_s=2.0)
    assert done.stopped == ["r1", "r2"] and done.killed == [] and done.gone == []
    assert [proc_start_time(pid) for pid in pids] == [None, None]
    assert StateFile(tmp_path).load() == {}
    # Again: nothing left to stop.
    assert cleanup(tmp_path, grace_s=2.0).stopped == []
