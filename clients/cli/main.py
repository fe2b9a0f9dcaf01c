"""The `opscale` command."""

from __future__ import annotations

import typer

from clients.cli import (
    agent,
    apply,
    contexts,
    control,
    db,
    demo,
    describe,
    explain,
    get,
    oracle,
    serve,
    simulate,
    top,
    whatif,
    worker,
)

app = typer.Typer(
    name="opscale",
    help="opscale: operator-level autoscaling for large generative-model serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
serve.register(app)
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
app.add_typer(contexts.app, name="config")
demo.register(app)


@app.command("version")
def version_cmd() -> None:
    """Print the opscale version."""
    from importlib.metadata import version

    typer.echo(f"opscale {version('opscale')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
