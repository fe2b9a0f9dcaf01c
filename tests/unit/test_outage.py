"""Quiet outages: one WARNING when a dependency goes, a reminder per interval with the duration, one
INFO when it is back, DEBUG for every other failed attempt (on a fake clock)."""

from __future__ import annotations

import logging

import pytest

from opscale.outage import Outage


def test_an_outage_is_said_once_reminded_and_ended_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage("decision: database unavailable", logging.getLogger("test.outage"), clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="test.outage")
    outage.ok()  # no outage: nothing to say
    for _ in range(320):  # a retry every 0.25 s for 80 s (binary-exact steps: no rounding drift)
        outage.failed("connection refused")
        now[0] += 0.25
    assert outage.down and outage.failures == 320
    outage.ok()
    outage.ok()  # already back: nothing more to say
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    # Attempt 1 at 100 s opens it; attempt 241 at 160 s is the first 60 s after: the reminder.
    assert said == [
        (logging.WARNING, "decision: database unavailable: connection refused"),
        (
            logging.WARNING,
            "decision: database unavailable for 60 s (241 failed attempts): connection refused",
        ),
        (logging.INFO, "decision: database unavailable: over after 80.0 s (320 failed attempts)"),
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 318
    assert not outage.down and outage.failures == 0
