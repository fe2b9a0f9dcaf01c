"""`opscale agent cleanup`: stop the workers an agent left behind when it is gone for good.

An agent killed with SIGKILL (or one stopped with ``--keep-workers`` that is never started again) leaves
its workers running, recorded in its state directory by (pid, start time). This stops exactly those
processes, never a pid the kernel has since reused for something else, and only while no agent holds
the directory: a live agent owns its workers, and stopping them under it would look to it like crashes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from opscale.agent.state import StateFile, StateLock, same_process

POLL_S = 0.05
KILL_WAIT_S = 5.0  # SIGKILL is not instant either (a process in D state), but it is not long


@dataclass(frozen=True)
class Cleaned:
    stopped: list[str]  # replica ids whose processes were stopped
    killed: list[str]  # of those, the ones that needed SIGKILL after the grace period
    gone: list[str]  # recorded, but their process had already exited


def cleanup(state_dir: Path, grace_s: float) -> Cleaned:
    """SIGTERM the process group of every live recorded worker, SIGKILL after ``grace_s``; then an empty
    state file. Raises ``StateDirLocked`` while an agent holds ``state_dir``."""
    lock = StateLock(state_dir)
    lock.acquire("opscale agent cleanup")
    try:
        state = StateFile(state_dir)
        recorded = state.load()
        live = {rid: st for rid, st in recorded.items() if same_process(st.pid, st.start_time)}
        for st in live.values():
            _signal(st.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(same_process(s.pid, s.start_time) for s in live.values()):
            time.sleep(POLL_S)
        killed = [rid for rid, st in live.items() if same_process(st.pid, st.start_time)]
        for rid in killed:
            _signal(live[rid].pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and any(
            same_process(live[r].pid, live[r].start_time) for r in killed
        ):
            time.sleep(POLL_S)
        state.save({})
        return Cleaned(sorted(live), sorted(killed), sorted(set(recorded) - set(live)))
    finally:
        lock.release()


def _signal(pid: int, sig: signal.Signals) -> None:
    # Workers run in their own session (the supervisor starts them so): the group is the replica.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
