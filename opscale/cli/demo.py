"""`opscale demo`: the control plane, a local agent with fake GPUs running real workers, and the simulated
serving framework replaying a public trace against them over gRPC; a live view, then a report with plots.

The embedded default keeps its SQLite file under ``--out`` and starts from an empty one each run;
``--postgres-redis`` runs the same demo against PostgreSQL + Redis (migrated to head first).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from opscale.cli.common import echo, handle_errors, settings, writable_dir
from opscale.cli.exit_codes import ExitCode

Opt = typer.Option
# 120 s at 20x from 30 s in covers minutes 10-50 of the Azure conversation trace: ~100 req/s rising to
# ~170 and falling back, so pools visibly scale up within the default two minutes (at 10x from the
# start the load is flat and so are the replica counts), with ~15 worker processes at the peak.
DEFAULT_SPEEDUP = 20.0
DEFAULT_START_S = 30.0


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo_cmd(
        duration_s: Annotated[int, Opt("--duration-s", min=5, help="seconds to replay (wall clock)")] = 120,
        speedup: Annotated[
            float, Opt("--speedup", min=0.1, help="replay the trace this many times faster")
        ] = DEFAULT_SPEEDUP,
        trace: Annotated[str, Opt("--trace", help="azure-conv, azure-code or a trace file")] = "azure-conv",
        start_s: Annotated[
            float, Opt("--start-s", min=0, help="start this far into the compressed trace")
        ] = DEFAULT_START_S,
        out: Annotated[Path, Opt("--out", help="report, plots, timeline and logs go here")] = Path(
            "out/demo"
        ),
        model: Annotated[str, Opt("--model", help="model preset")] = "llama3-8b",
        fake_gpus: Annotated[str, Opt("--fake-gpus", help="the agent's fake GPUs")] = "24xH100",
        max_replicas: Annotated[int, Opt("--max-replicas", min=1, help="cap per operator pool")] = 6,
        postgres_redis: Annotated[
            bool, Opt("--postgres-redis", help="use PostgreSQL + Redis (--database-url, --counters-url)")
        ] = False,
        database_url: Annotated[
            str, Opt("--database-url", help="with --postgres-redis")
        ] = "postgresql://opscale:opscale@localhost:5432/opscale",
        counters_url: Annotated[
            str, Opt("--counters-url", help="with --postgres-redis")
        ] = "redis://localhost:6379/0",
        live: Annotated[bool, Opt("--live/--no-live", help="rich live view (off: a line every 10 s)")] = True,
    ) -> None:
        """Run the end-to-end demo and write report.md, PNG plots and timeline.json under --out."""
        from rich.console import Console

        from opscale.demo.run import DemoOptions, run_demo
        from opscale.demo.stack import FAST_SETTINGS

        writable_dir(out, "--out")
        if postgres_redis:
            from opscale.db.migrate import upgrade

            echo(f"migrating {database_url.split('@')[-1]} to the head revision …")
            upgrade(database_url)
            db, counters = database_url, counters_url
        else:
            db_file = out / "opscale.db"
            db_file.unlink(missing_ok=True)
            db, counters = f"sqlite:///{db_file}", "memory://"
        cfg = settings(
            None,
            database_url=db,
            counters_url=counters,
            metrics_port=None,
            ingest_port=0,
            decision_port=0,
            placement_port=0,
            **FAST_SETTINGS,
        )
        # The services log to a file: lines on the terminal would tear the live view.
        logging.basicConfig(filename=out / "services.log", level=logging.INFO, force=True)
        console = Console()
        opts = DemoOptions(
            duration_s=duration_s,
            speedup=speedup,
            trace=trace,
            start_s=start_s,
            out=out,
            model=model,
            fake_gpus=fake_gpus,
            max_replicas=max_replicas,
            live=live and console.is_terminal,
            command="opscale " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
        leftovers = asyncio.run(run_demo(opts, cfg, console))
        if leftovers:
            echo(f"{leftovers} worker processes were still alive after the agent stopped (killed)")
            raise typer.Exit(int(ExitCode.FAILURE))
