"""Private PostgreSQL and Redis servers for the chaos suite: started in a temporary directory on free
ports, so a test can stop and restart them without touching the shared servers other tests use.

PostgreSQL refuses to run as root: as root, ``initdb``/``pg_ctl`` run as the ``postgres`` user
(``runuser``) in a directory that user owns. Redis keeps an append-only file (fsync always), as a
production Redis would, so that a restart is an outage and not also a wipe of the windows.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import IN_CI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def which(name: str) -> str | None:
    """A server binary on PATH, else in Debian's versioned PostgreSQL directory (newest first), where
    ``pg_ctlcluster`` installs keep ``initdb`` and ``pg_ctl`` off PATH."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(
            Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
            key=lambda p: tuple(int(x) for x in p.parts[-3].split(".") if x.isdigit()),  # 9.6 < 15
        )
        found = str(versions[-1]) if versions else None
    return found


def unavailable(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(message)


def require_binaries(*names: str) -> None:
    missing = [n for n in names if which(n) is None]
    if missing:
        unavailable(f"the chaos suite needs {', '.join(missing)} on PATH to start private servers")


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class PrivatePostgres:
    def __init__(self) -> None:
        require_binaries("initdb", "pg_ctl")
        self.root = Path(tempfile.mkdtemp(prefix="opscale-chaos-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("PostgreSQL will not run as root and there is no 'postgres' user to run it as")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, name: str, *argv: str) -> None:
        subprocess.run([*self._as, str(which(name)), *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "pg.log"), "-w", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: every client connection is cut, as when the server goes away."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        subprocess.run([*self._as, str(which("pg_ctl")), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    def __init__(self) -> None:
        require_binaries("redis-server")
        self.root = Path(tempfile.mkdtemp(prefix="opscale-chaos-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        log = (self.root / "redis.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: Redis syncs the append-only file and exits
            self.proc.wait(timeout=30)
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
