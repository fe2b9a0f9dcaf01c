"""The `opscale` command."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context  # Typer vendors click from 0.29 on
from typer.core import TyperCommand, TyperGroup

#: ExitCode.INTERNAL, without importing exit_codes (and grpc) for every command.
INTERNAL_EXIT = 7


@dataclass(frozen=True, slots=True)
class Lazy:
    """A command imported only when it runs: ``module.app`` (a group of commands) when ``group``, else
    what ``module.register(app)`` adds. ``summary`` is what ``opscale --help`` lists, so listing the
    commands imports none of them (a unit test keeps it equal to the command's own help)."""

    module: str
    summary: str
    group: bool = False


# In the order ``opscale --help`` lists them. Commands import their heavy dependencies (SQLAlchemy,
# the services, numpy, the simulator) only when they run: ``opscale get`` must not pay for ``up``.
LAZY: dict[str, Lazy] = {
    "serve": Lazy(
        "opscale.cli.serve",
        "Run one control-plane service until SIGTERM/Ctrl-C (production: one process per service).",
    ),
    "up": Lazy(
        "opscale.cli.serve",
        "Run ingest, decision, placement and the KEDA scaler in one process (embedded default: SQLite + "
        "in-process counters).",
    ),
    "health": Lazy(
        "opscale.cli.health",
        "Exit 0 if the service answers SERVING (TLS files and token from the settings), else 1 or 6.",
    ),
    "agent": Lazy(
        "opscale.cli.agent",
        "Run the node agent, or clean up after one that is gone.",
    ),
    "worker": Lazy(
        "opscale.cli.worker",
        "Run the reference operator worker (normally started by `opscale agent`, not by hand).",
    ),
    "simulate": Lazy(
        "opscale.cli.simulate",
        "Replay one trace through the simulated data plane with one policy in the loop.",
    ),
    "evaluate": Lazy(
        "opscale.cli.simulate",
        "Run the evaluation matrix (traces × models × SLOs × policies) and write the reports.",
    ),
    "oracle": Lazy(
        "opscale.cli.oracle",
        "Search fixed plans in the simulator for the fewest GPUs meeting the SLO (p99 TTFT and p99 "
        "per-request TBT, nothing rejected, no KV stall) on every seed, and over a longer trace.",
    ),
    "validate": Lazy(
        "opscale.cli.oracle",
        "Each planner's own plan held fixed in the simulator over the validation grid: predicted vs "
        "simulated p99 TTFT and per-request TBT, and GPUs vs the oracle's.",
    ),
    "apply": Lazy(
        "opscale.cli.apply",
        "Create or update deployments from a YAML spec (name, model, gpu_type, policy, slo, limits...).",
    ),
    "delete": Lazy(
        "opscale.cli.control",
        "Delete a deployment (its spec and control loop; --expected-version guards against races).",
    ),
    "freeze": Lazy(
        "opscale.cli.control",
        "Hold a deployment's replica counts: decisions are still made and recorded, nothing changes.",
    ),
    "unfreeze": Lazy(
        "opscale.cli.control", "Let the control loop change a frozen deployment's replicas again."
    ),
    "cordon": Lazy(
        "opscale.cli.control", "Stop placing new replicas on a node; the ones running there stay."
    ),
    "uncordon": Lazy("opscale.cli.control", "Let placement use a cordoned node again."),
    "drain": Lazy(
        "opscale.cli.control",
        "Cordon a node, then move every replica on it elsewhere (start there, drain and stop here).",
    ),
    "explain": Lazy(
        "opscale.cli.explain",
        "Why a decision: inputs, model estimates, reasons, stabilizer effects, what placement did.",
    ),
    "what-if": Lazy(
        "opscale.cli.whatif",
        "Compare the policies' plans for a hypothetical steady load: GPUs, pools, latency vs SLO, watts.",
    ),
    "top": Lazy(
        "opscale.cli.top",
        "Live view of every deployment: pools, GPUs, load (req/s, tokens), TTFT/TBT p99 against the SLO.",
    ),
    "load": Lazy(
        "opscale.cli.load",
        "Push synthetic (Poisson) or trace-driven load at a deployment through the SDK, then stop.",
    ),
    "demo": Lazy(
        "opscale.cli.demo",
        "Run the end-to-end demo and write report.md, PNG plots and timeline.json under --out.",
    ),
    "db": Lazy("opscale.cli.db", "Database schema: upgrade, downgrade, current revision.", group=True),
    "certs": Lazy(
        "opscale.cli.certs", "TLS certificates and bearer tokens for a secured deployment.", group=True
    ),
    "get": Lazy("opscale.cli.get", "List nodes, GPUs, deployments, replicas or decisions.", group=True),
    "describe": Lazy("opscale.cli.describe", "Show one deployment or node in detail.", group=True),
    "config": Lazy(
        "opscale.cli.contexts",
        "Named contexts: which decision/placement/ingest addresses to use.",
        group=True,
    ),
}


def load_command(name: str) -> Command:
    """The real command ``name`` (its module imported now)."""
    entry = LAZY[name]
    module: Any = import_module(entry.module)
    if entry.group:
        command = typer.main.get_command(module.app)
        command.name = name
        return command
    holder = typer.Typer()
    holder.callback()(lambda: None)  # a group even when the module adds a single command
    module.register(holder)
    group = typer.main.get_command(holder)
    assert isinstance(group, TyperGroup)
    return group.commands[name]


class LazyGroup(TyperGroup):
    """Lists every command from ``LAZY`` without importing it; imports a command when it is run (or
    its own ``--help`` is asked for)."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*LAZY, *(n for n in super().list_commands(ctx) if n not in LAZY)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        # For the listing only: a stand-in carrying the summary (resolve_command loads the real one).
        return TyperCommand(cmd_name, help=LAZY[cmd_name].summary)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        name = str(args[0]) if args else ""
        if name in LAZY and name not in self.commands:
            self.add_command(load_command(name), name)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="opscale",
    cls=LazyGroup,
    help="opscale: operator-level autoscaling for large generative-model serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def every_command(names: Sequence[str] = ()) -> dict[str, Command]:
    """The real commands (all of them, or ``names``), for the docs generator and tests."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    wanted = names or root.list_commands(Context(root))
    return {n: load_command(n) if n in LAZY else root.commands[n] for n in wanted}


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
    from opscale.cli.credentials import GIVEN

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
        raise SystemExit(INTERNAL_EXIT) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
