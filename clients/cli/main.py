"""The `opscale` command."""

from __future__ import annotations

import typer

from clients.cli import db, serve, simulate

app = typer.Typer(
    name="opscale",
    help="opscale: operator-level autoscaling for large generative-model serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
serve.register(app)
simulate.register(app)


@app.command("version")
def version_cmd() -> None:
    """Print the opscale version."""
    from importlib.metadata import version

    typer.echo(f"opscale {version('opscale')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
