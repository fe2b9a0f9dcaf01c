"""`opscale certs …`: a development CA and certificates for TLS/mTLS, and bearer tokens for the
tokens file (``auth_tokens_file``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
import yaml

from opscale.certs import DEFAULT_SERVER_NAMES, ROLES, init, k8s_secrets, parse_client, write
from opscale.cli.common import echo, handle_errors
from opscale.errors import ConfigError
from opscale.grpcutil.auth import sha256_hex

app = typer.Typer(help="TLS certificates and bearer tokens for a secured deployment.", no_args_is_help=True)
Opt = typer.Option


@app.command("init")
@handle_errors
def init_cmd(
    out: Annotated[Path, Opt("--out", help="directory for the PEM files (and secrets.yaml)")],
    san: Annotated[
        list[str] | None,
        Opt("--san", help="extra host name or address the services are dialled by (repeatable)"),
    ] = None,
    agent: Annotated[
        list[str] | None, Opt("--agent", help="node name to issue an agent certificate for (repeatable)")
    ] = None,
    client: Annotated[
        list[str] | None,
        Opt("--client", help="name=role client certificate (repeatable; default admin=admin, viewer=viewer)"),
    ] = None,
    days: Annotated[int, Opt("--days", help="validity of every certificate")] = 365,
    namespace: Annotated[str, Opt("--namespace", help="namespace of the Kubernetes Secrets")] = "opscale",
    force: Annotated[bool, Opt("--force", help="replace existing files (a new CA!)")] = False,
    if_missing: Annotated[
        bool,
        Opt("--if-missing", help="do nothing (exit 0) when OUT already has a CA: a one-shot job's rerun"),
    ] = False,
) -> None:
    """Make a development CA and the server, agent and client certificates signed by it.

    Writes ca.crt/key, server.crt/key, agent-<node>.crt/key and client-<name>.crt/key under OUT, and
    secrets.yaml (Kubernetes TLS Secrets). The role of each certificate is its subject's OU.
    """
    if if_missing and (out / "ca.crt").exists():
        echo(f"{out / 'ca.crt'} exists: keeping the CA and its certificates")
        return
    clients = [parse_client(c) for c in (client or ["admin=admin", "viewer=viewer"])]
    issued = init(
        server_names=[*DEFAULT_SERVER_NAMES, *(san or [])],
        agents=agent or ["gpu-0"],
        clients=clients,
        days=days,
    )
    paths = write(issued, out, force=force)
    (out / "secrets.yaml").write_text(k8s_secrets(issued, namespace))
    echo(f"wrote {len(paths)} files under {out} (and secrets.yaml); CA: {out / 'ca.crt'}")
    echo(
        f"serve with: OPSCALE_TLS_CERT_FILE={out / 'server.crt'} OPSCALE_TLS_KEY_FILE={out / 'server.key'} "
        f"OPSCALE_TLS_CA_FILE={out / 'ca.crt'}"
    )


@app.command("token")
@handle_errors
def token_cmd(
    subject: Annotated[str, typer.Argument(help="who the token names (an agent's: its node name)")],
    role: Annotated[str, Opt("--role", help=f"one of {', '.join(ROLES)}")] = "viewer",
) -> None:
    """Print a new random bearer token and the tokens-file entry for it (the file holds only its hash)."""
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: must be one of {', '.join(ROLES)}")
    if not subject or len(subject) > 200 or "\x00" in subject:
        raise ConfigError("SUBJECT: must be a name of 1 to 200 characters")
    token = secrets.token_urlsafe(32)
    entry = yaml.safe_dump(
        [{"token_sha256": sha256_hex(token), "subject": subject, "role": role}], sort_keys=False
    )
    echo(f"token: {token}")
    echo("append to the auth_tokens_file:")
    echo(entry.rstrip())
