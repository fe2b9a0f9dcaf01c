"""``opscale load --deployment D --rps R [--trace FILE] [--duration S]``: push load at a deployment through
the SDK, as a serving framework would, so the quick start has something to scale for.

Synthetic load is a Poisson process at ``--rps`` with (prompt, output) lengths drawn from a named mix
(``opscale.sim.mixes``: ShareGPT pairs by default, or ``fixed:IN/OUT``); a trace (a packaged name or a
file ``opscale simulate --trace`` reads) is replayed on its own clock, sped up or slowed down to
``--rps`` when given. Each request is one ``record_arrival`` at its arrival time, in real time; only
arrivals and lengths are sent (what the planner policies need), never latencies nobody measured. A
progress line shows what was sent; the command stops by itself after ``--duration`` seconds (or at the
trace's end) and flushes what is buffered.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import grpc
import typer

from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.cli.client import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TIMEOUT_S,
    CliConfigOpt,
    ContextOpt,
    DecisionOpt,
    TimeoutOpt,
    connect,
)
from opscale.cli.common import fail, handle_errors
from opscale.cli.exit_codes import ExitCode
from opscale.errors import InvalidArgument
from opscale.grpcutil.client import ClientSecurity, sync_channel

if TYPE_CHECKING:
    import numpy as np

    from opscale.sdk.recorder import Recorder

MAX_RPS = 100_000.0
MAX_DURATION_S = 86_400.0
PROGRESS_EVERY_S = 1.0  # on a terminal; piped, a line every PIPED_EVERY_S
PIPED_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each request arrives (seconds from the start, sorted), its prompt and output tokens, and
    how long the load lasts (a synthetic load its whole duration, a short trace to its last request)."""

    at_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    span_s: float

    def __len__(self) -> int:
        return len(self.at_s)


def poisson(rps: float, duration_s: float, mix: str, seed: int) -> Schedule:
    """Poisson arrivals at ``rps`` for ``duration_s``, lengths from ``mix``."""
    import numpy as np

    from opscale.sim.mixes import get_mix

    draw = get_mix(mix)
    rng = np.random.default_rng(seed)
    # Enough exponential gaps to pass duration_s with overwhelming probability (mean + 6 sigma + 10).
    n = int(rps * duration_s + 6 * math.sqrt(rps * duration_s) + 10)
    at = np.cumsum(rng.exponential(1.0 / rps, size=n))
    at = at[at < duration_s]
    inputs, outputs = draw(len(at), rng)
    return Schedule(at, inputs, outputs, duration_s)


def replay(source: str, rps: float | None, duration_s: float, seed: int) -> Schedule:
    """A trace's requests on its own clock (scaled to ``rps`` on average when given), cut at duration."""
    import numpy as np

    from opscale.sim.traces import load_trace

    try:
        trace = load_trace(source, rng=np.random.default_rng(seed))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # what the readers' parsers raise
        raise InvalidArgument(f"--trace {source}: cannot read it: {' '.join(str(exc).split())}") from None
    if len(trace) == 0:
        raise InvalidArgument(f"--trace {source}: it has no requests", field="trace")
    at = trace.arrival_s - float(trace.arrival_s[0])  # from its first request, wherever its clock began
    own_s = float(at[-1])
    if rps is not None and own_s > 0:
        at = at / (rps / (len(at) / own_s))  # faster or slower, to rps requests per second on average
    keep = at < duration_s
    span = min(duration_s, float(at[-1]))
    return Schedule(at[keep], trace.input_tokens[keep], trace.output_tokens[keep], span)


@dataclass(slots=True)
class Progress:
    sent: int = 0
    elapsed_s: float = 0.0


def push(
    schedule: Schedule,
    recorder: Recorder,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[Progress], None] = lambda _: None,
    report_every_s: float = PROGRESS_EVERY_S,
) -> Progress:
    """Record each arrival when its time comes (stamped with the wall clock then), reporting progress
    every ``report_every_s``; returns once the schedule's span has passed, every arrival recorded."""
    start, wall_start = clock(), wall()
    at, n = schedule.at_s, len(schedule)
    progress = Progress()
    next_report = report_every_s
    while True:
        now = clock() - start
        last = now >= schedule.span_s
        while progress.sent < n and (last or at[progress.sent] <= now):
            i = progress.sent
            recorder.record_arrival(
                int(schedule.input_tokens[i]), int(schedule.output_tokens[i]), at_s=wall_start + float(at[i])
            )
            progress.sent += 1
        progress.elapsed_s = min(now, schedule.span_s)
        if last:
            return progress
        if now >= next_report:
            report(progress)
            next_report += report_every_s
        upcoming = float(at[progress.sent]) if progress.sent < n else schedule.span_s
        sleep(max(0.0, min(upcoming, next_report, schedule.span_s) - now))


def register(app: typer.Typer) -> None:
    @app.command("load")
    @handle_errors
    def load_cmd(
        deployment: Annotated[str, typer.Option("--deployment", "-d", help="deployment to load")],
        rps: Annotated[
            float | None,
            typer.Option(
                "--rps",
                min=0.001,
                max=MAX_RPS,
                help="requests per second (synthetic: required; with --trace: the replay's mean rate)",
                show_default=False,
            ),
        ] = None,
        trace: Annotated[
            str | None,
            typer.Option(
                "--trace",
                help="replay a trace: a packaged name or a file (as opscale simulate --trace)",
                show_default=False,
            ),
        ] = None,
        duration: Annotated[
            float, typer.Option("--duration", min=0.1, max=MAX_DURATION_S, help="seconds to run")
        ] = 60.0,
        length_mix: Annotated[
            str,
            typer.Option("--length-mix", help="synthetic lengths: sharegpt, longtail, fixed or fixed:IN/OUT"),
        ] = "sharegpt",
        seed: Annotated[int, typer.Option("--seed", min=0, help="random seed of arrivals and lengths")] = 0,
        ingest: Annotated[
            str | None,
            typer.Option(
                "--ingest",
                envvar="OPSCALE_INGEST_ADDRESS",
                help="ingest service host:port",
                show_default=False,
            ),
        ] = None,
        decision: DecisionOpt = None,
        context: ContextOpt = None,
        opscale_config: CliConfigOpt = DEFAULT_CONFIG_PATH,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Push synthetic (Poisson) or trace-driven load at a deployment through the SDK, then stop."""
        if trace is None and rps is None:
            raise InvalidArgument("give --rps (synthetic load) or --trace FILE (or both)", field="rps")
        # Bad input (a trace that cannot be read, an unknown mix) fails before any service is called.
        if trace is not None:
            schedule = replay(trace, rps, duration, seed)
        else:
            assert rps is not None
            schedule = poisson(rps, duration, length_mix, seed)
        with connect(config=opscale_config, context=context, decision=decision, timeout_s=timeout) as client:
            # An unknown deployment is exit 3 here, before any load is sent.
            client.call("decision", client.decision.GetDeployment, dpb.GetDeploymentRequest(name=deployment))
            address = ingest or client.addresses["ingest"]
            security = client.security
        from opscale.sdk import OpscaleClient

        if not _reachable(address, security, timeout):
            raise fail(f"cannot reach ingest at {address} (is opscale up running?)", ExitCode.UNAVAILABLE)
        sdk = OpscaleClient(
            address, deployment=deployment, instance="opscale-load", token=security.token, tls=security.tls
        )
        try:
            terminal = sys.stderr.isatty()

            def report(p: Progress) -> None:
                line = _line(deployment, p, schedule.span_s, sdk.stats().dropped_overflow)
                sys.stderr.write(f"\r{line}" if terminal else line + "\n")
                sys.stderr.flush()

            done = push(
                schedule,
                sdk,
                report=report,
                report_every_s=PROGRESS_EVERY_S if terminal else PIPED_EVERY_S,
            )
            flushed = sdk.flush(timeout)
            stats = sdk.stats()
        finally:
            sdk.close(flush_timeout_s=0.0)
        if terminal:
            sys.stderr.write("\n")
        dropped = (
            stats.dropped_overflow + stats.dropped_rejected + stats.dropped_expired + stats.dropped_invalid
        )
        if not flushed or dropped:
            why = stats.last_error or "the buffer did not empty in time"
            raise fail(
                f"ingest at {address} did not take every sample: {stats.sent_samples} of {done.sent} "
                f"sent, {dropped} dropped ({why})",
                ExitCode.UNAVAILABLE,
            )
        typer.echo(_line(deployment, done, schedule.span_s, 0).replace("load ", "load done: ", 1))


def _reachable(address: str, security: ClientSecurity, timeout_s: float) -> bool:
    """Whether ingest answers at all: the SDK would otherwise retry quietly until the end."""
    channel = sync_channel(address, security)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()
    return True


def _line(deployment: str, p: Progress, duration_s: float, dropped: int) -> str:
    rate = p.sent / p.elapsed_s if p.elapsed_s > 0 else 0.0
    tail = f", {dropped} dropped" if dropped else ""
    return (
        f"load {deployment}: {p.elapsed_s:,.0f}/{duration_s:,.0f} s, {p.sent:,} requests sent "
        f"({rate:,.1f} req/s){tail}"
    )
