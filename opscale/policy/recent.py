"""The last seconds of the window: a burst seen before the window's mean moves.

The planners read a 30 s window, whose mean rate climbs for 30 s after a step in the load: at a step
from 3 to 60 req/s it reads 12.5 after 5 s and 32 after 15. Azure code's bursts (×6: from nothing to
40–130 req/s within 20 s, for a minute or two) are half over before the mean shows them, and a whole
replica ordered then starts 12–17 s later. Knative's autoscaler meets the same lag with a second, short
"panic" window beside its stable one (10% of it by default) and scales on it when it reads well above
the stable one. So does the operator policy's forecast, with a bound rather than a ratio:

    λ_recent = (n − SIGNIFICANT·√n) / T_r

for n requests in the window's last T_r = ``RECENT_S`` seconds (``opscale.signals.summary``): the rate
SIGNIFICANT Poisson standard errors below what they counted. Where it is above the forecast's central
rate, the forecast starts from it instead (plus the trend over the start-up, as from the window's
rate). On a steady load it is below the window's rate almost always (n is ~6× fewer requests, so
√n-relative noise is ~2.4× the window's, and two standard errors are taken off), so it costs nothing
there; on a rise it moves the plan some 10–25 s before the window's mean reaches the same rate.

A whole-model stage held inside its 20 s slot (``opscale.policy.cadence``) scales up at once when this
bound passes the rate the slot's plan covered, as it does when the window's rate passes it.

Measured (BENCHMARKS.md, 2026-12-07, with idle windows read as idle, ``opscale.signals.load``): on Azure
code ×6's hour operator-level's share of requests in SLO rose from 62–73% to 70–88% for the four
profiled models, at −2% to +3% GPU-hours; evaluate's quick Azure conv slices moved by at most 0.3%.
"""

from __future__ import annotations

import math
from dataclasses import replace

from opscale.policy.adaptive import SIGNIFICANT, Forecast
from opscale.policy.window import LoadWindow


def recent_floor(load: LoadWindow) -> float:
    """λ_recent (module docstring); 0 where the window carries no short window."""
    n, span = load.recent_arrivals, load.recent_s
    if n is None or span <= 0.0 or n <= 0:
        return 0.0
    return max(0.0, n - SIGNIFICANT * math.sqrt(n)) / span


def with_recent(fc: Forecast, load: LoadWindow, scale: float = 1.0) -> Forecast:
    """``fc`` started from λ_recent (× ``scale``: the planner's headroom) where that is above its central
    rate."""
    floor = recent_floor(load) * scale
    central = floor + max(0.0, fc.slope_rps_per_s) * fc.horizon_s
    if floor <= 0.0 or central <= fc.central_rps:
        return fc
    return replace(fc, central_rps=central, recent_rps=floor)
