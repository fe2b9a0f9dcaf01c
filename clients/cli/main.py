"""The `opscale` command."""

from __future__ import annotations

from typing import Annotated

import typer

from clients.cli import (
    agent,
    apply,
    certs,
    contexts,
    control,
    db,
    demo,
    describe,
    explain,
    get,
    health,
    load,
    oracle,
    serve,
    simulate,
    top,
    whatif,
    worker,
)
from clients.cli.client import GIVEN
from clients.cli.exit_codes import ExitCode

app = typer.Typer(
    name="opscale",
    help="opscale: operator-level autoscaling for large generative-model serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(certs.app, name="certs")
serve.register(app)
health.register(app)
agent.register(app)
worker.register(app)
simulate.register(app)
oracle.register(app)
# SRE commands against running services (docs/cli.md is generated from these).
app.add_typer(get.app, name="get")
app.add_typer(describe.app, name="describe")
apply.register(app)
control.register(app)
explain.register(app)
whatif.register(app)
top.register(app)
load.register(app)
app.add_typer(contexts.app, name="config")
demo.register(app)


@app.callback()
def credentials(
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="OPSCALE_TOKEN", help="bearer token for the services", show_default=False
        ),
    ] = None,
    tls_ca: Annotated[
        str | None,
        typer.Option(
            "--tls-ca",
            envvar="OPSCALE_TLS_CA_FILE",
            help="CA to verify the services (TLS)",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(
            "--tls-cert", envvar="OPSCALE_TLS_CERT_FILE", help="client certificate (mTLS)", show_default=False
        ),
    ] = None,
    tls_key: Annotated[
        str | None,
        typer.Option(
            "--tls-key", envvar="OPSCALE_TLS_KEY_FILE", help="key of --tls-cert", show_default=False
        ),
    ] = None,
) -> None:
    """Credentials for the commands that call the services (they win over the context's)."""
    GIVEN.values.update(
        {
            "token": token or "",
            "tls_ca_file": tls_ca or "",
            "tls_cert_file": tls_cert or "",
            "tls_key_file": tls_key or "",
        }
    )


@app.command("version")
def version_cmd() -> None:
    """Print the opscale version."""
    from importlib.metadata import version

    typer.echo(f"opscale {version('opscale')}")


def run(application: typer.Typer) -> None:
    """Run a Typer app so that every failure is one line on stderr and an exit code, never a traceback:
    usage errors (a bad flag, a missing argument) exit 2 like any bad input; a bug of ours exits 7
    naming the exception (the commands map every error they expect themselves)."""
    try:
        code = application(standalone_mode=False)
    except typer.TyperException as exc:  # a usage error (exit code 2) or another of Typer's own
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except Exception as exc:
        typer.echo(
            f"error: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}", err=True
        )
        raise SystemExit(int(ExitCode.INTERNAL)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
