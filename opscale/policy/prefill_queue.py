"""One prefill pool as a queue: prompts of a length distribution on R replicas, batching included.

Queue model. A prefill pool of R replicas is a GI/G/R queue whose jobs are prompts: λ prompts/s arrive
(Poisson at the first pool), a prompt of L tokens occupies a replica for S(L) = one pass of that prompt
through the unit's operators on its g GPUs, and L follows the window's length distribution. So

    E[S] = Σ p(L)·S(L),   c_s² = Var S / E[S]²,   a = λ·E[S],   stable iff R > a.

Prefill attention costs ~L² (the causal core) and the rest ~L, so S(L) — and with it E[S] and c_s² —
is priced per length, never at the mean length: a long-tailed prompt mix has E[S] well above S(E[L]).
The wait: Erlang C for P(W > 0), and beyond it the M/G/1 form of the wait, a geometric sum of
equilibrium residuals of S/R (Beneš; ``queueing.geometric_residual_quantiles``): exact for M/G/1 and
M/M/R, and it keeps the tail's prefactor, which an exponential at the tail's decay rate loses. A later
pool of an operator path sees the previous pool's departures, whose c_a² follows Whitt's QNA linking
equation (``queueing.departure_scv``) and is paced by its services (``queueing.tandem_covariance``): it
waits less by the heavy-traffic factor (1 + c_a²)/2, and less often (``queueing.delay_ratio``).
``pool_queue`` says how batching and long prompts enter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from opscale.model import PerfModel
from opscale.model.memory import PREFILL_CHUNK_TOKENS
from opscale.policy.planner_core import Unit, pass_ms
from opscale.policy.prefill_batches import (
    EXTRA_POINTS,
    WAIT_POINTS,
    BatchSizes,
    Law,
    Point,
    U,
    batched_wait,
    chain,
    points,
    residual_min,
    sum_points,
)
from opscale.policy.queueing import delay_ratio, erlang_c, geometric_residual_quantiles

PREFILL_MAX_BATCH = 16  # prompts per pass at most (and at most PREFILL_CHUNK_TOKENS tokens)


@dataclass(frozen=True, slots=True)
class PrefillLoad:
    """Prompts the stage must serve: rate, length points (tokens, probability) of every prompt that
    arrives (all of them load the queue), the share of each point the percentile is planned over (0 for
    prompts no configuration serves within the SLO), and the quantile. ``also``: other weightings of the
    points (absolute, one per estimate of the prompt lengths: ``LoadWindow.input_tokens_also``) that the
    percentile must hold under as well."""

    rate_rps: float
    lengths: tuple[tuple[int, float], ...]
    target: tuple[float, ...]  # per point: P(a prompt of that length counts toward the percentile)
    q: float
    also: tuple[tuple[float, ...], ...] = ()
    # The rate the pools are sized for: ``rate_rps`` plus the estimate's error (``planner_loads``), at
    # least ``rate_rps``; None: the rate is known exactly, sized as it is.
    sized_rps: float | None = None

    @property
    def sizing(self) -> PrefillLoad:
        """This load at the rate its pools are sized for."""
        if self.sized_rps is None or self.sized_rps <= self.rate_rps:
            return self
        return replace(self, rate_rps=self.sized_rps, sized_rps=None)

    def percentile_weights(self) -> np.ndarray:
        """One row per weighting the percentile is planned over, each summing to 1 (every prompt when
        none is servable)."""
        rows = [[p * t for (_, p), t in zip(self.lengths, self.target, strict=True)], *self.also]
        w = np.asarray([r for r in rows if sum(r) > 0.0] or [[p for _, p in self.lengths]], dtype=float)
        out: np.ndarray = w / w.sum(axis=1, keepdims=True)
        return out

    @property
    def length_q(self) -> int:
        """The longest of the weightings' q-quantile lengths."""
        cum = np.cumsum(self.percentile_weights(), axis=1)
        idx = int((cum < self.q - 1e-12).sum(axis=1).max())
        return self.lengths[min(idx, len(self.lengths) - 1)][0]

    @property
    def median_length(self) -> int:
        acc = 0.0
        for n, p in self.lengths:
            acc += p
            if acc >= 0.5:
                return n
        return self.lengths[-1][0]

    @property
    def max_length(self) -> int:
        return self.lengths[-1][0]

    @property
    def mean_length(self) -> float:
        return sum(n * p for n, p in self.lengths)


@dataclass(frozen=True, slots=True)
class Service:
    """One pool's per-prompt service times (ms, aligned with the load's lengths) alone in a pass."""

    ms: tuple[float, ...]
    mean_s: float


@lru_cache(maxsize=1 << 13)
def service(perf: PerfModel, unit: Unit, lengths: tuple[tuple[int, float], ...], gpus: float) -> Service:
    ms = tuple(pass_ms(perf, unit, 1, n, gpus) for n, _ in lengths)
    mean = sum(s * p for s, (_, p) in zip(ms, lengths, strict=True)) / 1e3
    return Service(ms, mean)


@dataclass(frozen=True, slots=True)
class QueueState:
    """A pool of some replicas at one load: whether it keeps up, and its wait (see ``pool_queue``)."""

    stable: bool
    p_wait: float  # P(W > 0)
    wait_ms: np.ndarray  # the wait given W > 0, as WAIT_POINTS equal-probability points, ascending
    mean_s: float  # mean per-prompt service, batching included
    scv: float
    rho: float
    wait_q_ms: float  # the pool's own wait quantile

    @staticmethod
    def unstable() -> QueueState:
        return QueueState(False, 1.0, np.full(WAIT_POINTS, np.inf), math.inf, 0.0, 1.0, math.inf)


def batched(
    perf: PerfModel, unit: Unit, lengths: tuple[tuple[int, float], ...], g: float, k: float, cap: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per length: (per-prompt share, whole pass) of a pass of about ``k`` prompts (at most ``cap`` and the
    chunk budget's worth of prompts of that length)."""
    return batched_at(perf, unit, lengths, g, max(1, min(cap, round(k))))


@lru_cache(maxsize=1 << 13)
def batched_at(
    perf: PerfModel, unit: Unit, lengths: tuple[tuple[int, float], ...], g: float, k: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    share, whole = [], []
    for n, _ in lengths:
        kk = max(1, min(PREFILL_CHUNK_TOKENS // n, k))
        t = pass_ms(perf, unit, kk, n, g)
        share.append(t / kk)
        whole.append(t)
    return tuple(share), tuple(whole)


# A prompt whose pass is this many times the median's is "long" (see ``pool_queue``). At 4 the ShareGPT
# mix's longest prompts (7k tokens against a 1.7k median) were split out too, and the worse-of-both view
# doubled a 4-replica pool's p99 wait (934 ms vs 539 ms from the sum of residuals, 494 ms simulated).
HEAVY = 8.0
HEAVY_LOAD = 0.02  # … and long prompts are split out when they keep this share of the replicas busy
# While long prompts hold some replicas, the others' queue lasts only as long as that state: it is priced
# as a steady queue up to this busy fraction, and the traffic beyond it as a backlog building up for the
# state's age (``_with_long_prompts``).
EDGE = 0.9


@lru_cache(maxsize=1 << 12)
def pool_queue(
    perf: PerfModel, unit: Unit, load: PrefillLoad, g: float, batch: int, replicas: int, ca2: float = 1.0
) -> QueueState:
    """The GI/G/R state of one prefill pool, batching included.

    Load. A replica that finds prompts waiting passes up to ``batch`` of them together (and at most the
    chunk budget: kmax prompts of the mean length); a prompt that did not wait runs alone. So the
    per-prompt service is a mix: alone (S₁(L)) with probability 1 − P(wait), else its share of a pass of
    k prompts (S_k(L)/k), k the mean size of a waiting prompt's own pass (``prefill_batches.chain``).
    P(wait) is Erlang C of the resulting load (a few fixed-point steps).

    Wait, given that a prompt waits. Batch 1 (kmax = 1): (1) until the first busy replica frees — each
    is in the middle of a length-biased pass, and the soonest of R ends first (``residual_min``); (2)
    with probability ρ, a further wait for whole passes: the sum of residuals of the module docstring (a
    later pool of an operator path, fed smoother departures, waits less by the heavy-traffic factor
    (1 + c_a²)/2; ``ca2`` is the c_a² of that factor, below 0 when the pool's services pace its input,
    ``queueing.paced_scv``). (1) + (2) is exact for M/G/1 and for M/M/R. Batches (kmax > 1): the bulk-service
    queue's chain (``prefill_batches.batched_wait``): the pass it waits for, the full passes ahead of it,
    and its own pass, whose size is random — a per-prompt sum of residuals ignores that a pass clears
    kmax prompts at once, and one mean-size pass that its size varies.

    Long prompts. Erlang C assumes every replica frees at a similar pace; a tail of prompts whose pass
    is many times the median's (``HEAVY``) breaks that: while n replicas are held by long prompts, the
    rest of the traffic has R − n replicas. So when long prompts keep a noticeable share of the replicas
    busy (``HEAVY_LOAD``), they are also split out (and the worse of both views kept): n follows
    M/M/R's occupancy at the long prompts' offered load, and in each state the others queue as above on
    R − n replicas — or, with none left, wait for the first long pass to end and the long prompts queued
    ahead (``_with_long_prompts``). The states' waits are mixed by the probability of the state (PASTA:
    long prompts see the same waits)."""
    lam = load.rate_rps
    sv = service(perf, unit, load.lengths, g)
    probs = [p for _, p in load.lengths]
    if lam <= 0.0:
        return QueueState(True, 0.0, np.zeros(WAIT_POINTS), sv.mean_s, 0.0, 0.0, 0.0)
    # a pass holds ``batch`` prompts at most, and fewer when their tokens fill the chunk budget first
    kmax = max(1, min(batch, round(PREFILL_CHUNK_TOKENS / load.mean_length)))
    fullest = batched_at(perf, unit, load.lengths, g, kmax)[0]
    if lam * sum(p * t for p, t in zip(probs, fullest, strict=True)) / 1e3 >= replicas:
        return QueueState.unstable()  # not even full passes keep up (and the chain would run to its end)
    passes_k = [batched_at(perf, unit, load.lengths, g, j)[1] for j in range(1, kmax + 1)]
    by_size = list(zip(*passes_k, strict=True))  # per length: the passes of 1 … kmax prompts
    zipped = [(p, s1, s1, ts, n) for (n, p), s1, ts in zip(load.lengths, sv.ms, by_size, strict=True)]
    laws_sizes = chain(lam / replicas, zipped, probs)
    share, _ = batched(perf, unit, load.lengths, g, laws_sizes[1].own_mean, batch)
    pi, rho = 0.0, 0.0
    mean = sv.mean_s
    for _ in range(8):
        mean = sum(p * ((1 - pi) * s1 + pi * sb) for p, s1, sb in zip(probs, sv.ms, share, strict=True)) / 1e3
        a = lam * mean
        rho = a / replicas
        new_pi = erlang_c(replicas, a) if a < replicas else 1.0
        done = abs(new_pi - pi) < 1e-4
        pi = new_pi
        if done:
            break
    if rho >= 1.0:
        return QueueState.unstable()
    zipped = [(p, s1, sb, ts, n) for (p, s1, _, ts, n), sb in zip(zipped, share, strict=True)]
    second = sum(p * ((1 - pi) * s1**2 + pi * sb**2) for p, s1, sb, _, _ in zipped) / 1e6
    scv = max(0.0, second / (mean * mean) - 1.0)
    median = next(s1 for acc, (_, s1, _, _, _) in zip(np.cumsum(probs), zipped, strict=True) if acc >= 0.5)
    long = [z for z in zipped if z[1] > HEAVY * median]
    short = [z for z in zipped if z[1] <= HEAVY * median]
    a_long = lam * sum(p * s1 for p, s1, _, _, _ in long) / 1e3
    got = _queue_on(lam, zipped, pi, rho, replicas, ca2, laws_sizes)
    if got is None:
        return QueueState.unstable()
    p_wait, wait = got
    if long and short and HEAVY_LOAD * replicas <= a_long < replicas:
        # Both views hold: long prompts holding replicas, and the whole queue's load; the worse of each.
        p_long, wait_long = _with_long_prompts(lam, short, long, a_long, pi, replicas, ca2, laws_sizes[1])
        if not math.isfinite(p_long):
            return QueueState.unstable()
        p_wait, wait = max(p_wait, p_long), np.maximum(wait, wait_long)
    tail = 1.0 - load.q
    wait_q = 0.0 if p_wait <= tail else float(np.interp(1.0 - tail / p_wait, U, wait))
    return QueueState(True, p_wait, wait, mean, scv, rho, wait_q)


def _service_mix(pts: list[Point], pi: float) -> list[tuple[float, float]]:
    """A class's per-prompt service (s, probability): alone with probability 1 − π, else its share of a
    pass."""
    total = sum(pt[0] for pt in pts)
    mix = [(pt[1] / 1e3, pt[0] / total * (1 - pi)) for pt in pts]
    return mix + [(pt[2] / 1e3, pt[0] / total * pi) for pt in pts]


def _queue_on(
    lam: float,
    pts: list[Point],
    pi: float,
    rho: float,
    servers: int,
    ca2: float,
    known: tuple[list[Law], BatchSizes] | None = None,
) -> tuple[float, np.ndarray] | None:
    """(P(wait), conditional wait points) of one class of prompts on ``servers`` replicas; None when they
    cannot keep up. ``known``: ``chain`` of this class, when already known."""
    total = sum(pt[0] for pt in pts)
    probs = [pt[0] / total for pt in pts]
    mix = _service_mix(pts, pi)
    mean = sum(sec * p for sec, p in mix)
    a = lam * mean
    if a >= servers:
        return None
    p_wait = erlang_c(servers, a) * delay_ratio(servers, a / servers, ca2)
    if len(pts[0][3]) > 1:
        return p_wait, batched_wait(lam, pts, probs, servers, ca2, known or chain(lam / servers, pts, probs))
    residual = residual_min([pt[3][0] for pt in pts], probs, servers)
    beyond = max(min(rho, a / servers), 1e-300)  # > 0: the ratio below stays finite
    # beyond the first pass to end (probability ``beyond``): the M/G/1 sum of residuals of S/R, shorter by
    # the heavy-traffic factor (1 + c_a²)/2 when the arrivals are smoother than Poisson
    later = (1.0 - beyond) < U
    queue = np.zeros(WAIT_POINTS)
    if later.any():
        per_server = tuple((sec / servers, p) for sec, p in mix if p > 0.0)
        u = (U[later] - (1.0 - beyond)) / beyond
        queue[later] = geometric_residual_quantiles(per_server, a / servers, u) * 1e3 * (1.0 + ca2) / 2.0
    wait = sum_points(residual, queue)
    return p_wait, wait


def _with_long_prompts(
    lam: float,
    short: list[Point],
    long: list[Point],
    a_long: float,
    pi: float,
    replicas: int,
    ca2: float,
    sizes: BatchSizes,
) -> tuple[float, np.ndarray]:
    """P(wait) and conditional wait points when long prompts hold some replicas (``pool_queue``).

    Long prompts alone occupy n replicas with M/M/R's occupancy at their offered load (n < R, or all R
    busy and some queued). With n < R the rest queue on R − n replicas; with all R held, a prompt waits
    for the first long pass to end and, FIFO, for the long prompts queued ahead of it (geometric in
    number, each a long pass over R replicas).

    A state lasts until one of its long passes ends — seconds, where a queue near saturation takes
    minutes to reach its steady state. So on the c free replicas the short prompts queue as a steady
    queue at a load of at most ``EDGE``·c, and the load beyond that builds a backlog for as long as the
    state has lasted (its age, distributed as the residual of the passes holding it): a wait of
    (a/c − EDGE)·age more. Pricing the whole steady queue up to a = c and the wait for a long pass to end
    beyond it made the p99 jump threefold between 40 and 42 req/s (qwen2-57b-a14b, long-tail mix, four
    8-GPU replicas: 1.25 s to 4.0 s)."""
    p_short = sum(pt[0] for pt in short)
    lam_s = lam * p_short / (p_short + sum(pt[0] for pt in long))
    rho_long = a_long / replicas
    terms = [a_long**n / math.factorial(n) for n in range(replicas)]
    terms.append(a_long**replicas / math.factorial(replicas) / (1.0 - rho_long))
    occupancy = np.asarray(terms) / sum(terms)
    long_probs = [pt[0] for pt in long]
    long_pass = [pt[1] for pt in long]
    mean_long = sum(p * s for p, s in zip(long_probs, long_pass, strict=True)) / sum(long_probs)
    vals: list[np.ndarray] = []
    wts: list[float] = []
    p_wait = 0.0
    for n, p_n in enumerate(occupancy):
        if p_n < 1e-5:
            continue
        c = replicas - n
        got = _transient(lam_s, short, pi, c, ca2, residual_min(long_pass, long_probs, n)) if c >= 1 else None
        if got is not None:
            pw, waits = got
        else:
            # every replica held (or the rest cannot keep up): the first long pass to end, then the
            # long prompts queued ahead (P(any) = ρ_long, each ~ a long pass shared by R replicas)
            held = max(n, 1)
            residual = residual_min(long_pass, long_probs, held)
            queue = np.where(
                1.0 - rho_long > U,
                0.0,
                -np.log(np.clip((1.0 - U) / rho_long, 1e-12, 1.0)) * mean_long / replicas,
            )
            pw = 1.0
            waits = sum_points(residual, queue)
            own = sizes.seen @ sizes.given  # the own pass's size, whatever the pass waited for
            waits = points(
                np.add.outer(waits, sizes.extra).ravel(),
                np.repeat(np.outer(np.full(WAIT_POINTS, 1.0), own).ravel(), EXTRA_POINTS),
            )
        if pw > 0.0:
            vals.append(waits)
            wts.append(float(p_n) * pw)
            p_wait += float(p_n) * pw
    if p_wait <= 0.0:
        return 0.0, np.zeros(WAIT_POINTS)
    allw = np.concatenate([np.full(len(v), w / len(v)) for v, w in zip(vals, wts, strict=True)])
    return min(1.0, p_wait), points(np.concatenate(vals), allw)


def _transient(
    lam: float, short: list[Point], pi: float, servers: int, ca2: float, age_ms: np.ndarray
) -> tuple[float, np.ndarray]:
    """(P(wait), conditional wait points) of the short prompts on ``servers`` replicas while long prompts
    hold the others, for a state whose age has the points ``age_ms`` (``_with_long_prompts``)."""
    a = lam * sum(sec * p for sec, p in _service_mix(short, pi))
    steady = _queue_on(lam * min(1.0, EDGE * servers / a) if a > 0.0 else lam, short, pi, 0.999, servers, ca2)
    assert steady is not None  # at most EDGE busy: it keeps up
    p_wait, waits = steady
    beyond = a / servers - EDGE
    if beyond <= 0.0:
        return p_wait, waits
    build = beyond * age_ms
    vals = np.add.outer(np.concatenate([[0.0], waits]), build).ravel()
    wts = np.outer(
        np.concatenate([[1.0 - p_wait], np.full(len(waits), p_wait / len(waits))]), np.ones(len(build))
    )
    return 1.0, points(vals, wts.ravel())
