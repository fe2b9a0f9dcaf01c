"""Interpolators over measured latency points, built once and evaluated millions of times.

Rules (the first two are ../shared/profiles/README.md's; the reasons are ours):

- Between measured points: linear in log(x)–log(y). GPU kernel time is close to a power law in
  batch size between regimes (flat while latency-bound, ~linear once bandwidth- or compute-bound),
  and a power law is a straight line in log-log.
- Above the last point: linear in x (not in log-log) from the last two points. Past the measured range
  every operator is throughput-bound, where time grows linearly with work; a log-log extension would
  bend the curve according to the noise of two points.
- Below the first point: the first point's latency (clamped). The smallest batch measured is already
  on the latency floor (kernel launch, memory latency, one wave of thread blocks); fewer tokens do not
  make a kernel faster, and extending the log-log slope downwards would predict near-zero times.
- Monotone: y is replaced by its running maximum over x before anything else. Medians at tiny batches
  jitter by a few per cent (e.g. llama3-8b embedding: 0.01926 ms at 1 token, 0.01786 ms at 32), and a
  latency that falls when the batch grows would make the planner's searches over batch size chase
  noise. The running max changes only points that are below an earlier point, i.e. within that noise.

Evaluation is pure Python on precomputed tuples. Measured with timeit (one 15-point curve, one scalar,
Python 3.11, numpy 2.4): ``bisect`` + ``math.log``/``math.exp`` 0.43 µs per call; the same with
``numpy.searchsorted`` 2.6 µs, with ``numpy.interp`` 1.7 µs — numpy's per-call overhead on scalars
outweighs anything it saves on 15 points, so numpy is not used here at all.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise

from opscale.errors import InvalidArgument


def running_max(values: Sequence[float]) -> list[float]:
    out: list[float] = []
    top = -math.inf
    for v in values:
        top = max(top, v)
        out.append(top)
    return out


class Curve:
    """y(x) for x > 0: log-log between points, linear above, clamped below, optionally monotone."""

    __slots__ = ("_lx", "_ly", "_slopes", "_tail", "_x0", "_xn", "_y0", "_yn")

    def __init__(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        *,
        monotone: bool = True,
        tail_slope: float | None = None,
    ) -> None:
        if not xs or len(xs) != len(ys):
            raise InvalidArgument("a curve needs at least one point and as many x as y", field="points")
        pairs = sorted(zip(xs, ys, strict=True))
        if any(x <= 0 or y <= 0 or not math.isfinite(x) or not math.isfinite(y) for x, y in pairs):
            raise InvalidArgument("curve points must be finite and positive", field="points")
        if any(a[0] == b[0] for a, b in pairwise(pairs)):
            raise InvalidArgument("curve points must have distinct x", field="points")
        px = [x for x, _ in pairs]
        py = running_max([y for _, y in pairs]) if monotone else [y for _, y in pairs]
        self._lx = tuple(math.log(x) for x in px)
        self._ly = tuple(math.log(y) for y in py)
        self._slopes = tuple(
            (self._ly[i + 1] - self._ly[i]) / (self._lx[i + 1] - self._lx[i]) for i in range(len(px) - 1)
        )
        self._x0, self._y0 = px[0], py[0]
        self._xn, self._yn = px[-1], py[-1]
        if tail_slope is None:
            tail_slope = (py[-1] - py[-2]) / (px[-1] - px[-2]) if len(px) > 1 else 0.0
        self._tail = tail_slope

    @property
    def tail_slope(self) -> float:
        """dy/dx used above the last point."""
        return self._tail

    @property
    def x_range(self) -> tuple[float, float]:
        return self._x0, self._xn

    def __call__(self, x: float) -> float:
        if x <= self._x0:
            return self._y0
        if x >= self._xn:
            return self._yn + self._tail * (x - self._xn)
        lx = math.log(x)
        i = bisect_right(self._lx, lx) - 1
        return math.exp(self._ly[i] + self._slopes[i] * (lx - self._lx[i]))


class Grid:
    """y(batch, length) from points on a (possibly ragged) grid, e.g. decode attention (batch, kv_len).

    Bilinear in log space inside the grid: first log-log along batch within each measured length
    row, then log-log between the two rows that bracket ``length``. Above the longest row: linear in
    ``length ** length_power`` from the two longest rows — power 1 for decode (attention reads the
    whole KV once, so time is linear in its length), power 2 for the prefill attention core (causal
    attention does 2·S²·q FLOPs per sequence, so time is linear in S²). Below the shortest row:
    clamped, for the same reason as ``Curve``.

    Ragged rows (the profiles skip the largest batches at the longest lengths) are first completed on
    the union of batches by each row's own rule (linear extrapolation in batch). Then, to stay
    monotone in both directions, each column takes the running max over length, and each row's
    slope above the largest batch takes the running max over length too, so that a longer row never
    drops below a shorter one when both are extrapolated. That makes the grid non-decreasing in length
    everywhere and in batch inside the length range; above the longest row, "non-decreasing in batch"
    additionally needs the gap between the two longest rows not to shrink with batch, which the
    measured data satisfy (physically the gap grows ∝ batch) and the property test checks.
    """

    __slots__ = ("_l0", "_lengths", "_llen", "_ln", "_ln1", "_power", "_rows")

    def __init__(
        self,
        points: Sequence[tuple[float, float, float]],
        *,
        monotone: bool = True,
        length_power: int = 1,
    ) -> None:
        by_length: dict[float, list[tuple[float, float]]] = defaultdict(list)
        for batch, length, y in points:
            if length <= 0:
                raise InvalidArgument("grid lengths must be positive", field="points")
            by_length[length].append((batch, y))
        if not by_length:
            raise InvalidArgument("a grid needs at least one point", field="points")
        lengths = sorted(by_length)
        raw = [Curve([b for b, _ in by_length[n]], [y for _, y in by_length[n]], monotone=monotone)
               for n in lengths]  # fmt: skip
        batches = sorted({b for n in lengths for b, _ in by_length[n]})
        table = [[row(b) for b in batches] for row in raw]
        tails = [row.tail_slope for row in raw]
        if monotone:
            for j in range(1, len(table)):
                table[j] = [max(a, b) for a, b in zip(table[j - 1], table[j], strict=True)]
                tails[j] = max(tails[j - 1], tails[j])
        self._rows = tuple(
            Curve(batches, ys, monotone=monotone, tail_slope=t) for ys, t in zip(table, tails, strict=True)
        )
        self._lengths = tuple(float(n) for n in lengths)
        self._llen = tuple(math.log(n) for n in lengths)
        self._l0 = self._lengths[0]
        self._ln = self._lengths[-1]
        self._ln1 = self._lengths[-2] if len(lengths) > 1 else self._ln
        self._power = length_power

    @property
    def lengths(self) -> tuple[float, ...]:
        return self._lengths

    def __call__(self, batch: float, length: float) -> float:
        rows = self._rows
        if length <= self._l0:
            return rows[0](batch)
        if length >= self._ln:
            top = rows[-1](batch)
            if self._ln1 == self._ln:
                return top
            below = rows[-2](batch)
            p = self._power
            return top + (top - below) * (length**p - self._ln**p) / (self._ln**p - self._ln1**p)
        ll = math.log(length)
        j = bisect_right(self._llen, ll) - 1
        lo = math.log(rows[j](batch))
        hi = math.log(rows[j + 1](batch))
        t = (ll - self._llen[j]) / (self._llen[j + 1] - self._llen[j])
        return math.exp(lo + (hi - lo) * t)


class PowerCurve:
    """Busy power (W) vs tokens: linear in log(tokens) between measured points, clamped at both ends.

    Power is bounded by the board limit and saturates once an operator is throughput-bound, so it is
    never extrapolated.
    """

    __slots__ = ("_lx", "_w")

    def __init__(self, xs: Sequence[float], watts: Sequence[float]) -> None:
        merged: dict[float, list[float]] = defaultdict(list)
        for x, w in zip(xs, watts, strict=True):
            merged[x].append(w)
        if not merged:
            raise InvalidArgument("a power curve needs at least one point", field="watts")
        keys = sorted(merged)
        # Several attention rows share a token count (batch × seq_len); their mean stands for it.
        self._lx = tuple(math.log(x) for x in keys)
        self._w = tuple(sum(merged[x]) / len(merged[x]) for x in keys)

    def __call__(self, x: float) -> float:
        lx = math.log(x) if x > 0 else -math.inf
        if lx <= self._lx[0]:
            return self._w[0]
        if lx >= self._lx[-1]:
            return self._w[-1]
        i = bisect_right(self._lx, lx) - 1
        t = (lx - self._lx[i]) / (self._lx[i + 1] - self._lx[i])
        return self._w[i] + (self._w[i + 1] - self._w[i]) * t
