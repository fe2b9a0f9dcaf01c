"""The counter store against a Redis that requires a password, and one that speaks only TLS (issue 13):
``counters_url`` carries both (``redis://:PASSWORD@host:port/db``, ``rediss://…?ssl_ca_certs=…``), a
wrong password is ``Unavailable`` naming no secret, and the URL is printed with the password hidden.

Each test starts its own ``redis-server`` on free ports (the shared one on 6379 has no password), with
certificates from ``opscale.certs``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opscale.certs import DEFAULT_SERVER_NAMES, init, write
from opscale.config import redact_url
from opscale.counters import make_counter_store
from opscale.errors import Unavailable
from tests.conftest import IN_CI

PASSWORD = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """(plain port with a password, TLS port, certificates dir)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; CI=true, so this test fails instead of skipping")
        pytest.skip("redis-server is not installed")
    certs = tmp_path / "certs"
    write(init(server_names=DEFAULT_SERVER_NAMES, agents=[], clients=[], days=1), certs, force=False)
    port, tls_port = free_port(), free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--requirepass", PASSWORD, "--tls-port", str(tls_port), "--tls-auth-clients", "no"]
    args += ["--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key")]
    args += ["--tls-ca-cert-file", str(certs / "ca.crt")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                time.sleep(0.05)
        yield port, tls_port, certs
    finally:
        proc.terminate()
        proc.wait(10)


async def _roundtrip(url: str) -> None:
    store = make_counter_store(url, prefix="secured:")
    try:
        await store.ping()
    finally:
        await store.close()


async def test_a_password_and_tls_in_the_counters_url(redis_server: tuple[int, int, Path]) -> None:
    port, tls_port, certs = redis_server
    await _roundtrip(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    await _roundtrip(f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={certs / 'ca.crt'}")
    with pytest.raises(Unavailable) as info:
        await _roundtrip(f"redis://:wrong-pw@127.0.0.1:{port}/0")
    assert "wrong-pw" not in info.value.message and PASSWORD not in info.value.message
    assert redact_url(f"redis://:{PASSWORD}@h:6379/0") == "redis://:***@h:6379/0"
