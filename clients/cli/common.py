"""Options shared by CLI commands, and the one place errors become exit codes and one-line messages."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from clients.cli.exit_codes import ExitCode, exit_for_error
from opscale.errors import OpscaleError

if TYPE_CHECKING:
    from opscale.config import Settings

P = ParamSpec("P")
R = TypeVar("R")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="OPSCALE_CONFIG", help="YAML settings file", show_default=False),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///file or postgresql://user@host/db [env: OPSCALE_DATABASE_URL]",
        show_default=False,
    ),
]
CountersOpt = Annotated[
    str | None,
    typer.Option(
        "--counters-url",
        help="memory:// or redis://host:port/db [env: OPSCALE_COUNTERS_URL]",
        show_default=False,
    ),
]
HostOpt = Annotated[
    str | None, typer.Option("--host", help="address to bind [env: OPSCALE_LISTEN_HOST]", show_default=False)
]
MetricsPortOpt = Annotated[
    int | None, typer.Option("--metrics-port", help="Prometheus port (0: any free)", show_default=False)
]


def fail(message: str, code: ExitCode) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into 'error: <message>' on stderr and the mapped exit code; no tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OpscaleError as exc:
            raise fail(exc.message, exit_for_error(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def settings(config: Path | None, **overrides: Any) -> Settings:
    from opscale.config import load_settings  # pydantic-settings: only the commands that read settings

    return load_settings(config, **overrides)


def echo(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()
