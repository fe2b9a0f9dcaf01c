"""`opscale oracle` (the fewest GPUs of fixed plans that meet the SLO in the simulator) and `opscale
validate` (each planner's predictions and GPUs against the simulation and the oracle, over a grid)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated

import typer

from opscale.cli.common import echo, handle_errors, writable_file
from opscale.errors import InvalidArgument

MAX_RPS = 10_000.0
MAX_TOKENS = 1_000_000


def _check(name: str, value: float, low: float, high: float, *, inclusive_low: bool = True) -> None:
    ok = math.isfinite(value) and (value >= low if inclusive_low else value > low) and value <= high
    if not ok:
        bound = "[" if inclusive_low else "("
        raise InvalidArgument(f"{name} must be in {bound}{low:g}, {high:,.0f}], got {value:g}", field=name)


def register(app: typer.Typer) -> None:
    @app.command("oracle")
    @handle_errors
    def oracle_cmd(
        model: Annotated[str, typer.Option(help="model preset, e.g. llama3-70b")] = "llama3-70b",
        rps: Annotated[float, typer.Option(help="steady request rate (Poisson arrivals), req/s")] = 8.0,
        input_tokens: Annotated[int, typer.Option(help="prompt tokens (fixed mix)")] = 1024,
        output_tokens: Annotated[int, typer.Option(help="output tokens (fixed mix)")] = 256,
        length_mix: Annotated[
            str | None,
            typer.Option(help="fixed, sharegpt, longtail or fixed:IN/OUT (overrides the token options)"),
        ] = None,
        layout: Annotated[
            str,
            typer.Option(
                help="model (whole replicas), operator (a pool per operator) or hybrid (either, per stage)"
            ),
        ] = "hybrid",
        ttft_ms: Annotated[float, typer.Option(help="TTFT p99 SLO, ms")] = 2000.0,
        tbt_ms: Annotated[float, typer.Option(help="TBT p99 SLO, ms")] = 100.0,
        gpu_type: Annotated[str, typer.Option(help="GPU type")] = "H100",
        seconds: Annotated[
            float | None,
            typer.Option(
                help="simulated seconds per run (default: 3,000 requests after the warm-up, at least 240 s, "
                "as validate runs: a p99 needs some 30 requests above it)"
            ),
        ] = None,
        seeds: Annotated[int, typer.Option(help="independent traces every result must pass on")] = 3,
        confirm_seconds: Annotated[
            float | None,
            typer.Option(
                help="the result must also pass the first seed over a trace this long (a queue near "
                "saturation builds slowly; default 1,800 s or --seconds, the longer); 0: no long trial"
            ),
        ] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON")] = None,
    ) -> None:
        """Search fixed plans in the simulator for the fewest GPUs meeting the SLO (p99 TTFT and p99
        per-request TBT, nothing rejected, no KV stall) on every seed, and over a longer trace."""
        from rich.console import Console

        from opscale.model import get_gpu, get_preset
        from opscale.sim.fixed import MAX_SECONDS, Steady
        from opscale.sim.mixes import get_mix
        from opscale.sim.oracle import LAYOUTS, long_trial_s, oracle
        from opscale.sim.validate import steady_seconds

        _check("--rps", rps, 0.0, MAX_RPS, inclusive_low=False)
        _check("--input-tokens", input_tokens, 1, MAX_TOKENS)
        _check("--output-tokens", output_tokens, 1, MAX_TOKENS)
        _check("--ttft-ms", ttft_ms, 0.0, 3_600_000.0, inclusive_low=False)
        _check("--tbt-ms", tbt_ms, 0.0, 3_600_000.0, inclusive_low=False)
        if seconds is None:
            seconds = min(MAX_SECONDS, steady_seconds(rps))
        _check("--seconds", seconds, 10.0, MAX_SECONDS)
        _check("--seeds", seeds, 1, 20)
        long_s = long_trial_s(seconds) if confirm_seconds is None else confirm_seconds
        if long_s:
            _check("--confirm-seconds", long_s, seconds, MAX_SECONDS)
        if layout not in LAYOUTS:
            raise InvalidArgument(
                f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}", field="layout"
            )
        mix = length_mix or f"fixed:{input_tokens}/{output_tokens}"
        get_mix(mix)  # an unknown mix fails here, before any simulation
        get_preset(model)
        get_gpu(gpu_type)
        writable_file(json_out, "--json")
        load = Steady(
            model, rps, mix, ttft_ms, tbt_ms, gpu_type, seconds=seconds, warmup_s=min(40.0, seconds / 5)
        )
        console = Console(stderr=True)
        t0 = time.perf_counter()
        with console.status(f"oracle: {model} {layout} at {rps:g} req/s ({mix})") as status:
            res = oracle(
                load,
                layout,
                seeds=tuple(range(seeds)),
                progress=lambda s: status.update(f"oracle: {s}"),
                confirm_s=long_s or None,
            )
        data = res.to_json()
        plan = ", ".join(
            f"{k} {v['replicas']}x{v['gpu_share'] if v['gpu_share'] < 1 else v['gpus_per_replica']}GPU "
            f"b{v['batch_size']}"
            for k, v in data["plan"].items()
        )
        if res.feasible:
            echo(f"fewest GPUs meeting the SLO ({layout}): {res.gpus} whole, {res.gpus_placed:.1f} as placed")
        else:
            echo(f"no {layout} plan near the planner's meets the SLO; largest tried: {res.gpus} GPUs")
        echo(f"plan: {plan}")
        echo(f"planner's own plan: {res.planner_gpus} GPUs; attainment (worst seed): {res.attainment:.1%}")
        echo(f"{res.evaluations} simulations in {time.perf_counter() - t0:.0f} s")
        if json_out is not None:
            json_out.write_text(json.dumps(data, indent=1))

    @app.command("validate")
    @handle_errors
    def validate_cmd(
        quick: Annotated[bool, typer.Option("--quick", help="CI-sized subset (12 points, one seed)")] = False,
        json_out: Annotated[Path | None, typer.Option("--json", help="write every point as JSON")] = None,
        workers: Annotated[int, typer.Option(help="worker processes (0: one per CPU)")] = 0,
        model: Annotated[list[str] | None, typer.Option(help="only these models (repeatable)")] = None,
        seeds: Annotated[
            int, typer.Option(help="traces per point (default: 1 quick, 8 full; the oracle uses the first 3)")
        ] = 0,
        oracle: Annotated[
            bool,
            typer.Option(
                "--oracle/--no-oracle",
                help="search the simulated oracle per point (most of the run time); --no-oracle checks the "
                "planners' predictions alone",
            ),
        ] = True,
    ) -> None:
        """Each planner's own plan held fixed in the simulator over the validation grid: predicted vs
        simulated p99 TTFT and per-request TBT, and GPUs vs the oracle's.

        The plan is made from the first trace; its prediction is judged at the load of every trace it ran
        on."""
        import os

        from rich.progress import Progress

        from opscale.model import get_preset
        from opscale.sim.validate import grid, markdown, run_validation, summary

        for m in model or []:
            get_preset(m)
        _check("--seeds", seeds, 0, 20)
        _check("--workers", workers, 0, 256)
        n = len([1 for ld, _ in grid(quick) if not model or ld.model in model])
        if n == 0:
            raise InvalidArgument("no grid point left after --model", field="model")
        writable_file(json_out, "--json")
        t0 = time.perf_counter()
        with Progress(transient=True) as bar:
            task = bar.add_task("validating", total=n)
            points = run_validation(
                quick=quick,
                seeds=tuple(range(seeds)) if seeds else None,
                workers=workers or (os.cpu_count() or 1),
                models=model,
                on_done=lambda label: bar.update(task, advance=1, description=label[:60]),
                with_oracle=oracle,
            )
        echo(markdown(points))
        s = summary(points)
        echo("")
        echo(
            f"p99 TTFT within ±15%: {100 * s['ttft_within_15']:.0f}% (worst {100 * s['ttft_worst']:.0f}%); "
            f"p99 TBT within ±15%: {100 * s['tbt_within_15']:.0f}% (worst {100 * s['tbt_worst']:.0f}%); "
            f"the plans' own predictions, from the one trace each planner saw: TTFT "
            f"{100 * s['ttft_plan_within_15']:.0f}%, TBT {100 * s['tbt_plan_within_15']:.0f}%; "
            f"plans meeting the SLO: {s['meets_slo']}/{s['points']} on every trace, "
            f"{s['meets_slo_pooled']}/{s['points']} over the traces pooled "
            f"({s['meets_slo_pooled_as_planned']}/{s['points'] - s['planned_past_slo']} of the plans "
            f"predicted within it; {s['planned_past_slo']} predicted past it by their own planner); "
            + (
                f"GPUs ≤ {s['oracle_ratio_max']:.2f}× the oracle's ({s['oracle_infeasible']} points with no "
                "oracle plan)"
                if s["oracle_searched"]
                else "oracle not searched (--no-oracle)"
            )
        )
        echo(f"{n} points in {time.perf_counter() - t0:.0f} s")
        if json_out is not None:
            json_out.write_text(json.dumps(points, indent=1))
