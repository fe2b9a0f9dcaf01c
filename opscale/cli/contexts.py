"""``opscale config get-contexts|use-context|set-context|current-context``: named service addresses, as
kubectl keeps clusters, in ``~/.config/opscale/config.yaml`` (``--opscale-config`` / OPSCALE_CLI_CONFIG)."""

from __future__ import annotations

from typing import Annotated

import typer

from opscale.cli.client import DEFAULT_ADDRESSES, DEFAULT_CONFIG_PATH, SERVICES, CliConfig, CliConfigOpt
from opscale.cli.common import echo, fail, handle_errors
from opscale.cli.exit_codes import ExitCode
from opscale.cli.output import Format, OutputOpt, emit, table

app = typer.Typer(
    help="Named contexts: which decision/placement/ingest addresses to use.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="context name")]


@app.command("get-contexts")
@handle_errors
def get_contexts_cmd(
    output: OutputOpt = Format.TABLE, opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH
) -> None:
    """List contexts; the current one is marked with '*'."""
    config = CliConfig.load(opscale_config)
    t = table("CURRENT", "NAME", *(s.upper() for s in SERVICES))
    for name in sorted(config.contexts):
        addresses = {**DEFAULT_ADDRESSES, **config.contexts[name]}  # credential keys are not shown
        t.add_row("*" if name == config.current else "", name, *(addresses[s] for s in SERVICES))
    shown = {n: {k: "***" if k == "token" else v for k, v in c.items()} for n, c in config.contexts.items()}
    data = {"current-context": config.current, "contexts": shown}
    emit(output, data, t if config.contexts else f"No contexts in {config.path}; localhost defaults apply.")


@app.command("current-context")
@handle_errors
def current_context_cmd(opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH) -> None:
    """Print the current context's name."""
    config = CliConfig.load(opscale_config)
    if config.current is None:
        raise fail(f"no current-context in {config.path}", ExitCode.NOT_FOUND)
    echo(config.current)


@app.command("use-context")
@handle_errors
def use_context_cmd(name: NameArg, opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH) -> None:
    """Make NAME the current context."""
    config = CliConfig.load(opscale_config)
    config.context(name)  # exits, naming the known ones, if there is no such context
    config.current = name
    config.save()
    echo(f"switched to context {name!r}")


@app.command("set-context")
@handle_errors
def set_context_cmd(
    name: NameArg,
    decision: Annotated[str | None, typer.Option("--decision", help="decision host:port")] = None,
    placement: Annotated[str | None, typer.Option("--placement", help="placement host:port")] = None,
    ingest: Annotated[str | None, typer.Option("--ingest", help="ingest host:port")] = None,
    tls_ca: Annotated[str | None, typer.Option("--tls-ca", help="CA file to verify the services")] = None,
    tls_cert: Annotated[str | None, typer.Option("--tls-cert", help="client certificate file")] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="key file of --tls-cert")] = None,
    tls_server_name: Annotated[
        str | None, typer.Option("--tls-server-name", help="name expected in the services' certificates")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="bearer token (stored in the file)")] = None,
    opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
) -> None:
    """Create or change a context's addresses and credentials (unset ones keep their value, or the
    localhost default)."""
    config = CliConfig.load(opscale_config)
    entry = dict(config.contexts.get(name, {}))
    for key, value in (
        ("decision", decision),
        ("placement", placement),
        ("ingest", ingest),
        ("tls_ca_file", tls_ca),
        ("tls_cert_file", tls_cert),
        ("tls_key_file", tls_key),
        ("tls_server_name", tls_server_name),
        ("token", token),
    ):
        if value:
            entry[key] = value
    config.contexts[name] = entry
    if config.current is None:
        config.current = name
    config.save()
    echo(f"context {name!r} saved in {config.path}")
