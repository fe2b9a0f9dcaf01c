"""What-if planning off the service's event loop and GIL: worker processes with a CPU-time budget.

Planning a hypothetical load is pure CPU work whose cost the caller chooses (the operator planner took
~22 CPU-seconds for one absurd load). In a thread it would hold the GIL and starve the decision leader's
loop on the same process; here each request runs in a child process:

- **budget**: the child arms ``ITIMER_PROF`` (process CPU time, user + system) with the budget before
  planning; when it fires, planning stops there and the caller gets DEADLINE_EXCEEDED saying so;
- **cancellation**: when the RPC is cancelled (the client gave up or its deadline passed), the child is
  killed at once, so abandoned work does not go on burning a core; a fresh one replaces it;
- **starvation**: children run at a lower priority (nice 10) and at most ``workers`` plan at once;
  further requests wait their turn (within their own deadline);
- a wall-clock guard kills a child that neither finishes nor hits its CPU budget (a machine so busy
  the child gets no CPU at all).

Children are started with ``spawn`` (never fork a process running gRPC threads) on first use and reused.
The planner itself (``opscale.policy.whatif``) is called unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from opscale.errors import DeadlineExceeded, InvalidArgument
from opscale.policy.whatif import WhatIfResult, what_if
from opscale.spec import DeploymentSpec, PolicyKind

PlanFn = Callable[[DeploymentSpec, float, float, float, Sequence[PolicyKind]], list[WhatIfResult]]

log = logging.getLogger(__name__)

#: Seconds a child may take beyond its CPU budget in wall-clock time before it is killed.
WALL_SLACK_S = 10.0
WALL_FACTOR = 4.0


class _OverBudget(Exception):
    pass


def _on_prof(_signum: int, _frame: Any) -> None:
    raise _OverBudget


def _serve(conn: Connection, budget_s: float, plan: PlanFn) -> None:  # pragma: no cover - in the child
    """The child's loop: one request at a time until the parent closes the pipe."""
    with contextlib.suppress(OSError):
        os.nice(10)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops us
    signal.signal(signal.SIGPROF, _on_prof)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        spec, rps, input_tokens, output_tokens, policies = request
        try:
            signal.setitimer(signal.ITIMER_PROF, budget_s)
            try:
                result: tuple[str, Any] = ("ok", plan(spec, rps, input_tokens, output_tokens, policies))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _OverBudget:
            result = ("budget", None)
        except InvalidArgument as exc:
            result = ("invalid", (exc.message, exc.field))
        except Exception as exc:  # the planner's bug: the parent logs it and answers INTERNAL
            import traceback

            result = ("error", "".join(traceback.format_exception(exc)))
        try:
            conn.send(result)
        except (OSError, ValueError):
            return


class _Child:
    def __init__(self, context: Any, budget_s: float, plan: PlanFn) -> None:
        self.conn, child_end = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(child_end, budget_s, plan), name="opscale-whatif", daemon=True
        )
        self.process.start()
        child_end.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class PlanningPool:
    """At most ``workers`` what-if plans at once, each in a child process under ``budget_s`` CPU s."""

    def __init__(self, workers: int, budget_s: float, plan: PlanFn = what_if) -> None:
        """``plan`` is a module-level function (the child imports it by name): ``what_if`` but in tests."""
        self._budget_s = budget_s
        self._plan = plan
        self._context = multiprocessing.get_context("spawn")
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()

    def _start(self) -> _Child:
        return _Child(self._context, self._budget_s, self._plan)

    async def plan(
        self,
        spec: DeploymentSpec,
        rps: float,
        input_tokens: float,
        output_tokens: float,
        policies: Sequence[PolicyKind],
    ) -> list[WhatIfResult]:
        async with self._slots:
            child = self._idle.pop() if self._idle else await asyncio.to_thread(self._start)
            self._busy.add(child)
            healthy = False
            try:
                child.conn.send((spec, rps, input_tokens, output_tokens, list(policies)))
                wall_s = self._budget_s * WALL_FACTOR + WALL_SLACK_S
                kind, payload = await asyncio.wait_for(asyncio.to_thread(child.conn.recv), wall_s)
                healthy = True
            except TimeoutError:
                raise DeadlineExceeded(
                    f"what-if planning got no CPU for {wall_s:.0f} s (the service is overloaded); try again"
                ) from None
            except (EOFError, OSError) as exc:
                raise RuntimeError(f"the what-if planning process died: {exc!r}") from None
            finally:
                self._busy.discard(child)
                if healthy:
                    self._idle.append(child)
                else:  # cancelled, timed out or broken: whatever it was doing stops now
                    await asyncio.to_thread(child.kill)
        if kind == "ok":
            return list(payload)
        if kind == "budget":
            raise DeadlineExceeded(
                f"what-if planning used its CPU budget of {self._budget_s:g} s (whatif_cpu_budget_s) and "
                "was stopped; ask for fewer policies or a smaller load"
            )
        if kind == "invalid":
            message, field = payload
            raise InvalidArgument(message, field=field)
        log.error("what-if planning failed in its process:\n%s", payload)
        raise RuntimeError("what-if planning failed; see the service log")

    async def close(self) -> None:
        children = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for child in children:
            await asyncio.to_thread(child.kill)
