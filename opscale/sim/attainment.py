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
attainment the other cannot reach.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TARGET = 0.99


@dataclass(frozen=True, slots=True)
class Point:
    headroom: float
    attainment: float
    gpu_hours: float


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points no cheaper point out-attains, in increasing GPU-hours (and attainment)."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.gpu_hours, -p.attainment)):
        if not out or p.attainment > out[-1].attainment:
            out.append(p)
    return out


def gpu_hours_at(points: Sequence[Point], attainment: float) -> float | None:
    """GPU-hours to attain ``attainment`` on this policy's frontier (module docstring); None if no
    setting reaches it."""
    f = frontier(points)
    if not f or attainment > f[-1].attainment:
        return None
    if attainment <= f[0].attainment:
        return f[0].gpu_hours
    for lo, hi in itertools.pairwise(f):
        if lo.attainment <= attainment <= hi.attainment:
            w = (attainment - lo.attainment) / (hi.attainment - lo.attainment)
            return lo.gpu_hours + w * (hi.gpu_hours - lo.gpu_hours)
    raise AssertionError("unreachable: the frontier brackets every attainment up to its maximum")


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two policies on one scenario read at the same attainment."""

    level: float  # the common attainment both are read at
    gpu_hours: Mapping[str, float]  # per policy, at ``level``
    ratio: float  # first policy's GPU-hours over the second's

    def sentence(self, a: str, b: str) -> str:
        d = 1.0 - self.ratio
        verb = "fewer" if d >= 0 else "more"
        return (
            f"at equal attainment ({100 * self.level:.1f}%): {a} {self.gpu_hours[a]:.2f} GPU-h vs {b} "
            f"{self.gpu_hours[b]:.2f} GPU-h, {abs(100 * d):.1f}% {verb} (×{self.ratio:.2f})."
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
    return Comparison(level, {a: ga, b: gb}, ga / gb if gb else float("nan"))
