"""Quiet outages: how a loop reports a dependency (PostgreSQL, Redis, another service) that went away.

One WARNING when it goes, a reminder every ``remind_s`` saying for how long, one INFO when it is back;
every other failure in between goes to DEBUG. A loop that retries every 0.2 s during a 30 s outage so
writes 1 WARNING and 1 INFO instead of 150 tracebacks. Tracebacks stay for real bugs: callers pass only
errors they expect from an outage (``Unavailable``, the driver's connection errors) to ``failed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from opscale.errors import Unavailable

REMIND_S = 60.0

# What a dependency outage raises by the time it reaches a loop: opscale's own translation (the engine
# and the counter store raise ``Unavailable`` naming what is away), or a connection-level error where no
# translation sits in between. Anything else is a bug and keeps its traceback.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (Unavailable, ConnectionError, TimeoutError)


class Outage:
    """``what`` names the outage as a log line starts, e.g. "decision: database unavailable"."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        remind_s: float = REMIND_S,
        clock: Callable[[], float] = time.monotonic,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.what = what
        self._log = logger
        self._remind_s = remind_s
        self._clock = clock
        self._extra = dict(extra or {})
        self._since: float | None = None
        self._reminded: float = 0.0
        self.failures = 0  # during the current outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def down_s(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, error: object) -> None:
        """Report one failed attempt; logs only the first and then one reminder per ``remind_s``."""
        now = self._clock()
        self.failures += 1
        if self._since is None:
            self._since = self._reminded = now
            self._log.warning("%s: %s", self.what, error, extra=self._extra)
        elif now - self._reminded >= self._remind_s:
            self._reminded = now
            self._log.warning(
                "%s for %.0f s (%d failed attempts): %s",
                self.what,
                now - self._since,
                self.failures,
                error,
                extra=self._extra,
            )
        else:
            self._log.debug("%s: %s", self.what, error, extra=self._extra)

    def ok(self) -> None:
        """Report a success; logs once if it ends an outage."""
        if self._since is None:
            return
        self._log.info(
            "%s: over after %.1f s (%d failed attempts)",
            self.what,
            self._clock() - self._since,
            self.failures,
            extra=self._extra,
        )
        self._since, self.failures = None, 0
