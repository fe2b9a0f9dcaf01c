"""`opscale demo` end to end: start the stack, create the deployment, replay the trace with the live view,
stop everything, write the report. Ctrl-C (or SIGTERM) ends the replay early; teardown and the report
still run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from opscale.config import Settings
from opscale.demo.compare import JOBS, SideBySide, run_policy, scenario
from opscale.demo.replay import Replay, ReplayState, Second
from opscale.demo.report import plot, write_report, write_timeline
from opscale.demo.stack import Stack, worker_pids
from opscale.demo.view import render
from opscale.grpcutil.server import signals_set
from opscale.sim.plots import PLOTS_EXTRA, plots_available
from opscale.sim.traces import load_trace, scale_time
from opscale.spec import DeploymentSpec, parse_spec
from opscale.wire.specs import spec_to_pb


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: int
    speedup: float
    trace: str
    start_s: float
    out: Path
    model: str
    fake_gpus: str
    max_replicas: int
    live: bool
    command: str


def demo_spec(model: str, max_replicas: int) -> DeploymentSpec:
    return parse_spec(
        {
            "name": "demo",
            "model": {"preset": model},
            "gpu_type": "H100",
            "mode": "disaggregated",
            "policy": "operator",
            "slo": {"ttft_ms": 2000, "tbt_ms": 100, "percentile": 99},
            # Each replica is a real worker process on this host: cap the pools so a laptop copes. No
            # floor: the pools of the form a stage does not run (opscale.policy.hybrid) keep no replica,
            # and the planner keeps at least one in every pool of the form it runs.
            "limits": [{"min_replicas": 0, "max_replicas": max_replicas}],
        }
    )


async def run_demo(opts: DemoOptions, cfg: Settings, console: Console) -> int:
    """Returns the number of worker processes that had to be killed after the agent stopped (0: clean)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    spec = demo_spec(opts.model, opts.max_replicas)
    trace = scale_time(load_trace(opts.trace), opts.speedup)
    trace = trace.window(opts.start_s, opts.start_s + opts.duration_s + 1)
    stack = Stack(cfg, opts.out)
    stop = asyncio.Event()
    # Ctrl-C, SIGTERM and a closed terminal all stop the demo; the handlers stay until teardown is done.
    signal_guard = contextlib.ExitStack()
    signal_guard.enter_context(signals_set(stop, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)))
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    state = ReplayState()
    header = f"{opts.model} · {opts.trace} x{opts.speedup:g} · policy operator"
    # Both policies on the same window through evaluate's run_one, in child processes (CPU-bound: a
    # thread would slow the 1 Hz replay); the live view shows them once they are done.
    sc = scenario(opts.trace, opts.model, opts.speedup, opts.start_s, opts.duration_s)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=2)
    futures = {job: pool.submit(run_policy, sc, *job) for job in JOBS}

    def side_by_side() -> SideBySide | None:
        if not all(f.done() for f in futures.values()):
            return None
        try:
            runs = {p: f.result() for p, f in futures.items()}
        except Exception as exc:  # shown in the report; the live demo goes on
            note = f"the simulated comparison failed: {exc}"
            if note not in state.notes:
                state.notes.append(note)
            return None
        sweep = tuple(r for (p, h), r in runs.items() if p == "model" and h)
        return SideBySide(operator=runs["operator", 0.0], model=runs["model", 0.0], model_sweep=sweep)

    def say(message: str) -> None:
        # After SIGHUP (the terminal closed) writes fail; the teardown must go on regardless.
        with contextlib.suppress(OSError):
            console.print(message, soft_wrap=True)

    try:
        say("starting the control plane (ingest, decision, placement) …")
        await stack.start_services()
        say(f"  {', '.join(f'{k} {v}' for k, v in stack.addresses.items())}")
        say(f"starting the agent (node {stack.node}, {opts.fake_gpus} fake GPUs) …")
        await asyncio.to_thread(stack.start_agent, opts.fake_gpus)
        await stack.create_deployment(spec_to_pb(spec))
        say(f"deployment {spec.name} created; replaying {len(trace):,} requests for {opts.duration_s} s …")
        replay = Replay(
            spec,
            trace,
            opts.duration_s,
            stack.addresses["ingest"],
            stack.addresses["decision"],
            stack.channel("placement"),
        )
        state = replay.state
        say("warming up: 30 s of history for the first decision …")
        await replay.warm_up(stop)
        t0 = time.monotonic()
        if opts.live:
            with Live(
                render(spec, [], 0, opts.duration_s, header, None),
                console=console,
                refresh_per_second=2,
                screen=False,
            ) as live:

                def show(row: Second) -> None:
                    live.update(
                        render(
                            spec, state.rows, time.monotonic() - t0, opts.duration_s, header, side_by_side()
                        )
                    )

                await replay.run(show, stop)
        else:

            def progress(row: Second) -> None:
                if int(row.t_s) % 10 == 0:
                    decided = sum(row.decided.values())
                    both = side_by_side()
                    sim = ""
                    if both is not None:
                        op_now, ml_now = both.gpus_at(row.t_s)
                        sim = f" simulated operator {op_now} model {ml_now}"
                        matched = both.matched()
                        if matched is not both.model:
                            at = both.gpus_at(row.t_s, matched)[1]
                            sim += f" (at headroom {matched.metrics.headroom:g}: {at})"
                    console.print(
                        f"  t={row.t_s:4.0f}s load {row.arrivals:3d} req/s  replicas decided {decided} "
                        f"running {sum(row.running.values())}  GPUs {row.gpus_operator} "
                        f"(model planner, raw: {row.gpus_model_level}){sim}  decisions {row.decisions}",
                        soft_wrap=True,
                    )

            await replay.run(progress, stop)
    finally:
        say("stopping: workers, agent, services …")
        with contextlib.suppress(Exception):
            await stack.stop_workers(spec.name)
        await asyncio.to_thread(stack.stop_agent)
        await stack.stop_services()
        signal_guard.close()
        meta: dict[str, Any] = {
            "command": opts.command,
            "started": started,
            "duration_s": opts.duration_s,
            "interrupted": stop.is_set(),
            "database": _redact(cfg.database_url),
            "counters": _redact(cfg.counters_url),
            "fake_gpus": opts.fake_gpus,
            "trace": opts.trace,
            "speedup": opts.speedup,
            "node": stack.node,
            "leftover_workers": stack.killed_leftovers,
            "workers_alive_at_exit": len(worker_pids({stack.node})),
        }
        # The comparison finishes even when the replay was cut short (it is what the report explains).
        if not stop.is_set() or all(f.done() for f in futures.values()):
            say("waiting for the simulated operator-vs-model comparison …")
            await asyncio.to_thread(concurrent.futures.wait, list(futures.values()))
        both = side_by_side()
        pool.shutdown(wait=False, cancel_futures=True)
        write_timeline(opts.out, state, meta, both)
        plots: list[Path] = []
        if state.rows and plots_available():
            plots = plot(opts.out, spec, state.rows, both)
        elif state.rows:
            state.notes.append(f"no plots: {PLOTS_EXTRA}")
            say(f"no plots: {PLOTS_EXTRA}")
        report = write_report(opts.out, spec, state, meta, plots, both)
        say(f"report: {report}  ({len(plots)} plots, timeline.json) in {opts.out}/")
    return stack.killed_leftovers


def _redact(url: str) -> str:
    from opscale.config import redact_url

    return redact_url(url)
