"""Real processes, secured: `opscale certs init` makes the CA and certificates, `opscale up` serves every
service with mTLS and a tokens file on all interfaces, and the CLI gets in only with credentials whose
role allows the command; without TLS beyond loopback `opscale up` refuses to start."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml

from opscale.db.engine import make_async_engine, session_factory
from opscale.db.repo import AuditRepo
from opscale.grpcutil.auth import sha256_hex
from tests.e2e.test_cli_processes import PORTS_ANY, opscale, spawn, wait_ready

SPEC = """
name: chat
model: {preset: llama3-8b}
slo: {ttft_ms: 2000, tbt_ms: 100}
"""


async def audit_actors(url: str) -> list[str]:
    engine = make_async_engine(url)
    try:
        async with session_factory(engine)() as session:
            return [r.actor for r in await AuditRepo(session).list(name="chat")]
    finally:
        await engine.dispose()


def test_up_with_mtls_and_tokens_admits_only_the_right_roles(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    made = opscale("certs", "init", "--out", str(certs), "--client", "vera=viewer", "--client", "adam=admin")
    assert made.returncode == 0, made.stderr
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump([{"token_sha256": sha256_hex("op-token"), "subject": "olga", "role": "operator"}])
    )
    url = f"sqlite:///{tmp_path}/opscale.db"
    server_env = {
        **PORTS_ANY,
        "OPSCALE_DATABASE_URL": url,
        "OPSCALE_LISTEN_HOST": "0.0.0.0",
        "OPSCALE_TLS_CERT_FILE": str(certs / "server.crt"),
        "OPSCALE_TLS_KEY_FILE": str(certs / "server.key"),
        "OPSCALE_TLS_CA_FILE": str(certs / "ca.crt"),
        "OPSCALE_AUTH_TOKENS_FILE": str(tokens),
    }

    refused = opscale(
        "up",
        env={
            **server_env,
            "OPSCALE_TLS_CERT_FILE": "",
            "OPSCALE_TLS_KEY_FILE": "",
            "OPSCALE_TLS_CA_FILE": "",
        },
    )
    assert refused.returncode == 2, refused.stderr
    assert "without TLS" in refused.stderr and "Traceback" not in refused.stderr

    proc = spawn("up", env=server_env)
    try:
        ports = wait_ready(proc)
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC)
        decision = f"127.0.0.1:{ports['decision']}"

        def cli(who: str, *args: str, token: str = "") -> tuple[int, str]:
            env = {"OPSCALE_TLS_CA_FILE": str(certs / "ca.crt")}
            if who:
                env |= {"OPSCALE_TLS_CERT_FILE": str(certs / f"client-{who}.crt")}
                env |= {"OPSCALE_TLS_KEY_FILE": str(certs / f"client-{who}.key")}
            if token:
                env["OPSCALE_TOKEN"] = token
            done = opscale(*args, "--decision", decision, env=env)
            assert "Traceback" not in done.stderr
            return done.returncode, done.stderr

        plain = opscale("get", "deployments", "--decision", decision)
        assert plain.returncode == 6, plain.stderr  # a plaintext client cannot reach it
        code, err = cli("vera", "apply", "-f", str(spec))
        assert code == 8 and "PERMISSION_DENIED" not in err and "vera" in err, err
        assert cli("vera", "get", "deployments")[0] == 0
        code, err = cli("vera", "apply", "-f", str(spec), token="op-token")  # the token wins
        assert code == 0, err
        code, err = cli("vera", "delete", "chat", token="op-token")
        assert code == 8, err  # deleting is admin's
        assert cli("adam", "freeze", "chat")[0] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert asyncio.run(audit_actors(url)) == ["adam", "olga"]  # newest first: freeze, create
