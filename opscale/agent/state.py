"""The agent's memory across its own restarts: which processes it started, by pid AND start time.

A pid alone is not an identity: after a reboot or enough churn the kernel hands the same pid to an
unrelated process, and an agent that adopted (or killed) it would be badly wrong. The start time in
``/proc/<pid>/stat`` (field 22, clock ticks since boot) together with the pid is unique for the life of
the host, so a restarted agent adopts exactly the processes it started and nothing else.

The file is rewritten whole on every change through a temporary file and ``os.replace`` (atomic on
POSIX), so a crash mid-write leaves the previous version, never a torn one. The temporary file has a
unique name (``tempfile.mkstemp``): a fixed ``replicas.tmp`` let two writers rename each other's file
away (``FileNotFoundError … replicas.tmp -> replicas.json``, issue 14).

One agent owns a state directory at a time: ``StateLock`` holds an exclusive ``flock`` on
``agent.lock`` for the life of the process (the kernel drops it when the process dies, even by
SIGKILL, so a crashed agent never leaves a stale lock behind). A second agent pointed at the same
directory would adopt the first one's workers and fight it over them; it stops with an error instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from opscale.errors import FailedPrecondition

STATE_FILE = "replicas.json"
LOCK_FILE = "agent.lock"
FORMAT_VERSION = 1


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if there is no such live process.

    The command name (field 2) is in parentheses and may contain spaces or ')', so fields are counted
    from the LAST ')'. A zombie (state Z) has exited: it counts as gone.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def same_process(pid: int, start_time: int) -> bool:
    return pid > 0 and proc_start_time(pid) == start_time


@dataclass
class ReplicaState:
    """One replica as the agent remembers it (everything needed to adopt or restart it)."""

    replica_id: str
    generation: int
    template: str
    deployment: str
    stage: str
    operator: str
    gpu_indices: list[int]
    args: dict[str, str]
    port: int
    pid: int = 0
    start_time: int = 0
    restarts: int = 0
    draining: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ReplicaState:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


class StateFile:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE

    def load(self) -> dict[str, ReplicaState]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # Unreadable state: adopting nothing is safe only if we also never start twins; the caller
            # sees an empty map and placement's register reconciliation stops what it does not know.
            return {}
        return {r["replica_id"]: ReplicaState.from_doc(r) for r in doc.get("replicas", [])}

    def save(self, replicas: Mapping[str, ReplicaState]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT_VERSION, "replicas": [asdict(r) for r in replicas.values()]}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f"{STATE_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(doc, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class StateDirLocked(FailedPrecondition):
    """Another live process holds the state directory."""


class StateLock:
    """An exclusive, non-blocking ``flock`` on ``<state dir>/agent.lock``, released on ``release`` or
    when the process ends. The file records who holds it, for the error the next comer sees."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self, who: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StateDirLocked(
                f"state directory {self.directory} is in use by {holder}; stop that agent first, or "
                "give this one its own --state-dir (or --node-name: the default directory includes it)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{who} (pid {os.getpid()})\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
