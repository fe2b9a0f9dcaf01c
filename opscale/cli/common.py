"""Options shared by CLI commands, and the one place errors become exit codes and one-line messages."""

from __future__ import annotations

import functools
import inspect
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from opscale.cli.exit_codes import ExitCode, exit_for_error
from opscale.errors import InvalidArgument, OpscaleError

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


def setting_flags(*names: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command a ``--flag`` for each named setting (``ingest_port`` -> ``--ingest-port``), its help
    from the setting's description; the command receives the given ones as ``flags`` (a dict of setting
    name -> value, None when not given) to pass to ``settings``. The values are validated there, so a
    bad one is the same one-line error naming the setting as from the environment or a file."""
    from opscale.config import Settings as Model  # only commands that run a process use these

    def options(name: str) -> Any:
        field = Model.model_fields[name]
        if str(field.annotation).startswith("list["):
            kind: Any = list[str] | None
        elif type(field.default) in (int, float, bool):
            kind = type(field.default) | None
        else:  # paths, URLs, enums (validated by the settings, which name the allowed values)
            kind = str | None
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (env: OPSCALE_{name.upper()})"
        return Annotated[kind, typer.Option(flag, help=help_text, show_default=False)]

    def wrap(func: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(func)
        kept = [p for p in signature.parameters.values() if p.name != "flags"]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=options(n))
            for n in names
        ]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            flags = {n: kwargs.pop(n, None) for n in names}
            return func(*args, flags=flags, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            **{k: v for k, v in func.__annotations__.items() if k != "flags"},
            **{p.name: p.annotation for p in added},
        }
        return wrapper

    return wrap


def settings(config: Path | None, **overrides: Any) -> Settings:
    from opscale.config import load_settings  # pydantic-settings: only the commands that read settings

    return load_settings(config, **overrides)


def echo(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def writable_file(path: Path | None, option: str) -> None:
    """Fail now, not after minutes of simulation, where ``path`` cannot be written: its folder missing,
    a folder by that name, a read-only file system. Opening it for append is the test (permission bits
    say nothing to root); a file that was not there is not left behind."""
    if path is None:
        return
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise _unwritable(option, path, exc) from None
    if not existed:
        path.unlink(missing_ok=True)


def writable_dir(path: Path, option: str) -> None:
    """Create ``path`` (and its parents) and check a file can be written in it, before any work."""
    if path.exists() and not path.is_dir():
        raise InvalidArgument(f"{option} {path}: a file, not a folder", field=option.lstrip("-"))
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise _unwritable(option, path, exc) from None


def _unwritable(option: str, path: Path, exc: OSError) -> InvalidArgument:
    why = exc.strerror or type(exc).__name__
    return InvalidArgument(f"{option} {path}: cannot write there ({why})", field=option.lstrip("-"))
