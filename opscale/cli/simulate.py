"""`opscale simulate` (one trace, one policy) and `opscale evaluate` (the matrix, with reports)."""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from opscale.cli.common import echo, handle_errors, writable_dir, writable_file
from opscale.errors import InvalidArgument

TraceOpt = Annotated[
    str,
    typer.Option(
        "--trace",
        help="azure-conv, azure-code, servegen-m-large, a trace file (Azure CSV, plain CSV, Mooncake JSONL), "
        "or a ServeGen rate file (its *_length_pmf.csv beside it) or RATE.csv,PMF.csv",
    ),
]
ModelOpt = Annotated[str, typer.Option("--model", help="model preset, e.g. llama3-70b")]


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    @handle_errors
    def simulate_cmd(
        trace: TraceOpt = "azure-conv",
        model: ModelOpt = "llama3-70b",
        policy: Annotated[str, typer.Option(help="static, utilization, model, operator or pd")] = "operator",
        ttft_ms: Annotated[float, typer.Option(help="TTFT p99 SLO, ms")] = 2000.0,
        tbt_ms: Annotated[float, typer.Option(help="TBT p99 SLO, ms")] = 100.0,
        rate_scale: Annotated[float, typer.Option(help="multiply the trace's request rate")] = 1.0,
        speedup: Annotated[float, typer.Option(help="replay this many times faster")] = 1.0,
        start_s: Annotated[float, typer.Option(help="start this far into the compressed trace (s)")] = 0.0,
        duration_s: Annotated[float | None, typer.Option(help="replay this long (default: all)")] = None,
        gpu_type: Annotated[str, typer.Option(help="GPU type")] = "H100",
        seed: Annotated[int, typer.Option(min=0, help="seed for generated arrivals and rate scaling")] = 0,
        json_out: Annotated[Path | None, typer.Option("--json", help="write the metrics as JSON")] = None,
        lower_bound: Annotated[
            bool, typer.Option(help="also search the simulated oracle at every load level (slow)")
        ] = False,
    ) -> None:
        """Replay one trace through the simulated data plane with one policy in the loop."""
        from rich.progress import Progress

        from opscale.sim.experiment import Scenario, build_trace, oracle_bound, run_one

        sc = Scenario(trace, model, ttft_ms, tbt_ms, rate_scale, speedup, start_s, duration_s, gpu_type, seed)
        built = build_trace(sc)
        writable_file(json_out, "--json")
        with Progress(transient=True) as bar:
            lb = None
            if lower_bound:
                bar.add_task("oracle at every load level", total=None)
                lb = oracle_bound(sc, built, float(math.ceil(built.duration_s) + 1))
            task = bar.add_task(f"{policy} on {trace}", total=1.0)
            m, _ = run_one(sc, policy, trace=built, lb=lb, progress=lambda f: bar.update(task, completed=f))
        data = m.to_json()
        width = max(len(k) for k in data)
        for k, v in data.items():
            echo(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
        if json_out is not None:
            import json

            json_out.write_text(json.dumps(data, indent=1))

    @app.command("evaluate")
    @handle_errors
    def evaluate_cmd(
        quick: Annotated[
            bool,
            typer.Option("--quick", help="small matrix: 10 min of Azure conv per model, of long prompts"),
        ] = False,
        out: Annotated[Path, typer.Option(help="directory for results.json, results.md, *.png")] = Path(
            "out/evaluate"
        ),
        workers: Annotated[int, typer.Option(help="worker processes (0: one per CPU)")] = 0,
        policy: Annotated[list[str] | None, typer.Option(help="only these policies (repeatable)")] = None,
        trace: Annotated[list[str] | None, typer.Option(help="only these traces (repeatable)")] = None,
        model: Annotated[list[str] | None, typer.Option(help="only these models (repeatable)")] = None,
        plots: Annotated[bool, typer.Option(help="write PNG plots (needs matplotlib)")] = True,
        lower_bound: Annotated[
            bool,
            typer.Option(help="search the simulated oracle at every load level for the lower-bound column"),
        ] = True,
        headroom: Annotated[
            list[float] | None,
            typer.Option(
                help="headrooms the model and operator planners are swept over for the equal-attainment "
                "comparison (repeatable; default 0, 0.25, 0.5, 1; 0 alone: no sweep)"
            ),
        ] = None,
        sweep_policy: Annotated[
            list[str] | None,
            typer.Option(help="sweep only these planners (model, operator; repeatable; default both)"),
        ] = None,
    ) -> None:
        """Run the evaluation matrix (traces × models × SLOs × policies) and write the reports."""
        from rich.progress import Progress

        from opscale.errors import ConfigError
        from opscale.sim.plots import PLOTS_EXTRA, plots_available

        if plots and not plots_available():  # before the matrix runs, not after
            raise ConfigError(f"{PLOTS_EXTRA}, or pass --no-plots")

        from opscale.sim.evaluate import (
            SWEEP,
            full_matrix,
            quick_matrix,
            run_matrix,
            run_settings,
            scenario_subset,
            write_reports,
        )
        from opscale.sim.experiment import HEADROOM_POLICIES, POLICIES

        if workers < 0:
            raise InvalidArgument(f"--workers must be ≥ 0 (0: one per CPU), got {workers}", field="workers")
        scenarios = scenario_subset(quick_matrix() if quick else full_matrix(), trace, model)
        policies = tuple(policy) if policy else POLICIES
        for p in policies:
            if p not in POLICIES:
                known = ", ".join(POLICIES)
                raise InvalidArgument(f"--policy {p!r}: known policies: {known}", field="policy")
        sweep = tuple(SWEEP if headroom is None else headroom)
        swept = tuple(sweep_policy) if sweep_policy else HEADROOM_POLICIES
        for p in swept:
            if p not in HEADROOM_POLICIES:
                known = " and ".join(HEADROOM_POLICIES)
                raise InvalidArgument(
                    f"--sweep-policy {p!r}: only {known} have a headroom", field="sweep_policy"
                )
        for h in sweep:
            if not 0.0 <= h <= 4.0:
                raise InvalidArgument(f"--headroom must be in [0, 4], got {h:g}", field="headroom")
        writable_dir(out, "--out")
        command = "opscale evaluate" + (
            " " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else ""
        )
        t0 = time.perf_counter()
        total = len(scenarios) * sum(len(run_settings(p, sweep, swept)) for p in policies)
        with Progress(transient=True) as bar:
            task = bar.add_task("simulating", total=None if lower_bound else total)
            rows = run_matrix(
                scenarios,
                policies,
                workers=workers,
                on_done=lambda label: bar.update(task, advance=1, description=label[:60]),
                bound=lower_bound,
                cache_file=out / "oracle_cache.json",
                sweep=sweep,
                sweep_policies=swept,
            )
        write_reports(rows, out, command, plots=plots)
        echo((out / "results.md").read_text())
        echo(f"{total} runs in {time.perf_counter() - t0:.0f} s; reports in {out}/")
