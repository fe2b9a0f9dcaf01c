"""Comparing policies at equal SLO attainment.

A policy's default run and a competitor's rarely attain the same share of requests, and GPU-hours at
different attainment are not comparable: one more GPU buys attainment. So each planning policy is run
at several values of its headroom knob (plan for load × (1 + h)), which traces its cost curve — GPU-hours
against attainment — and both curves are read at the same attainment.

Reading a curve. The points of one policy on one scenario are reduced to their *frontier*: sorted by
GPU-hours, a point stays only if it attains more than every cheaper one (a point that costs more and
attains less is never the right setting). GPU-hours at attainment ``a`` is interpolated linearly between
the two frontier points whose attainments bracket ``a`` (exact at a measured point; between two settings
it is what mixing them in time would cost, the convex combination); below the frontier's lowest
attainment it is the cheapest point's GPU-hours (that setting already does better), above its highest it
is not reached (``None``): no setting in the sweep attains that much.

The common level of two policies is the highest attainment both reach (the smaller of their maxima),
capped at the target (99%): at that level each has a setting that meets it, and neither is charged for
attainment the other cannot reach. Energy is read the same way on its own curve (kWh against
attainment), when every point carries it: the least energy a setting spends to reach the level.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

TARGET = 0.99


@dataclass(frozen=True, slots=True)
class Point:
    headroom: float
    attainment: float
    gpu_hours: float
    kwh: float | None = None  # energy, allocated GPUs released when idle (None: not measured)


Cost = Callable[[Point], float]


def _gpu_hours(p: Point) -> float:
    return p.gpu_hours


def _kwh(p: Point) -> float:
    if p.kwh is None:
        raise ValueError("a point without energy")
    return p.kwh


def frontier(points: Sequence[Point], cost: Cost = _gpu_hours) -> list[Point]:
    """The points no cheaper point out-attains, in increasing cost (and attainment)."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (cost(p), -p.attainment)):
        if not out or p.attainment > out[-1].attainment:
            out.append(p)
    return out


def cost_at(points: Sequence[Point], attainment: float, cost: Cost = _gpu_hours) -> float | None:
    """The cost (GPU-hours by default) to attain ``attainment`` on this policy's frontier (module
    docstring); None if no setting reaches it."""
    f = frontier(points, cost)
    if not f or attainment > f[-1].attainment:
        return None
    if attainment <= f[0].attainment:
        return cost(f[0])
    for lo, hi in itertools.pairwise(f):
        if lo.attainment <= attainment <= hi.attainment:
            w = (attainment - lo.attainment) / (hi.attainment - lo.attainment)
            return cost(lo) + w * (cost(hi) - cost(lo))
    raise AssertionError("unreachable: the frontier brackets every attainment up to its maximum")


def gpu_hours_at(points: Sequence[Point], attainment: float) -> float | None:
    """``cost_at`` in GPU-hours."""
    return cost_at(points, attainment)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two policies on one scenario read at the same attainment."""

    level: float  # the common attainment both are read at
    gpu_hours: Mapping[str, float]  # per policy, at ``level``
    ratio: float  # first policy's GPU-hours over the second's
    kwh: Mapping[str, float] | None = None  # per policy, at ``level``, when every point has energy

    def sentence(self, a: str, b: str) -> str:
        d = 1.0 - self.ratio
        verb = "fewer" if d >= 0 else "more"
        energy = ""
        if self.kwh is not None and self.kwh[b]:
            de = 1.0 - self.kwh[a] / self.kwh[b]
            energy = (
                f"; energy {self.kwh[a]:.2f} vs {self.kwh[b]:.2f} kWh, {abs(100 * de):.1f}% "
                f"{'less' if de >= 0 else 'more'}"
            )
        return (
            f"at equal attainment ({100 * self.level:.1f}%): {a} {self.gpu_hours[a]:.2f} GPU-h vs {b} "
            f"{self.gpu_hours[b]:.2f} GPU-h, {abs(100 * d):.1f}% {verb} (×{self.ratio:.2f}){energy}."
        )


def compare(
    points: Mapping[str, Sequence[Point]], a: str, b: str, target: float = TARGET
) -> Comparison | None:
    """``a`` against ``b`` at the highest attainment both reach, capped at ``target``; None when
    either has no points."""
    if not points.get(a) or not points.get(b):
        return None
    level = min(target, max(p.attainment for p in points[a]), max(p.attainment for p in points[b]))
    ga, gb = gpu_hours_at(points[a], level), gpu_hours_at(points[b], level)
    if ga is None or gb is None:  # cannot happen: level ≤ each maximum
        raise AssertionError("the common level is within both frontiers")
    kwh = None
    if all(p.kwh is not None for p in (*points[a], *points[b])):
        ea, eb = cost_at(points[a], level, _kwh), cost_at(points[b], level, _kwh)
        kwh = {a: ea, b: eb} if ea is not None and eb is not None else None
    return Comparison(level, {a: ga, b: gb}, ga / gb if gb else float("nan"), kwh)
