"""What a prompt that waits in a prefill pool sees: the pass it waits for, and the passes batching makes.

Waits are carried as ``WAIT_POINTS`` equal-probability points (``U``). ``residual_min``: the time until
the first of R busy replicas frees. ``chain`` and ``batched_wait``: a pool whose passes hold several
prompts (``prefill_queue.pool_queue``), as the bulk-service queue's embedded chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from opscale.model.memory import PREFILL_CHUNK_TOKENS

WAIT_POINTS = 64  # a conditional wait is carried as this many equal-probability points
U = (np.arange(WAIT_POINTS) + 0.5) / WAIT_POINTS
EQUAL = np.full(WAIT_POINTS, 1.0 / WAIT_POINTS)
EXTRA_POINTS = 8  # a batched pass's time beyond a prompt's own pass alone is carried as this many points


Law = tuple[np.ndarray, np.ndarray]  # points (ms) and their probabilities
# probability, alone ms, batched share ms, passes of 1 … kmax prompts ms, prompt tokens
Point = tuple[float, float, float, tuple[float, ...], int]


def residual_min(passes: list[float], probs: list[float], replicas: int) -> np.ndarray:
    """Quantile points of the time until the first of ``replicas`` busy replicas frees: each is in the
    middle of a pass drawn length-biased (renewal theory: P(residual > t) = E[(T − t)⁺]/E[T]), and the
    soonest of them ends first: P(min > t) = P(residual > t)^R."""
    grid, surv = _residual_survival(tuple(passes), tuple(probs))
    surv_min = surv**replicas  # decreasing from 1 to 0
    # invert: the u-quantile is where P(min > t) = 1 − u
    out: np.ndarray = np.interp(1.0 - U, surv_min[::-1], grid[::-1])
    return out


@lru_cache(maxsize=1 << 12)
def _residual_survival(passes: tuple[float, ...], probs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One busy replica's residual pass: (grid, P(residual > t) on it). The same passes recur for every
    replica count a pool is tried at, and for every occupancy state of its long prompts."""
    t = np.asarray(passes)
    p = np.asarray(probs)
    mean = float((t * p).sum())
    grid = np.linspace(0.0, float(t.max()), 257)
    surv = np.clip((np.maximum(t[None, :] - grid[:, None], 0.0) * p[None, :]).sum(axis=1) / mean, 0.0, 1.0)
    grid.flags.writeable = surv.flags.writeable = False  # shared by every caller
    return grid, surv


@dataclass(frozen=True, slots=True)
class BatchSizes:
    """How many prompts share a pass (``_batch_sizes``): per state of the queue a pass starts with."""

    seen: np.ndarray  # [Q − 1]: P(a waiting prompt finds a pass running that started with Q queued)
    size: np.ndarray  # [Q − 1]: prompts in that pass, min(Q, kmax)
    given: np.ndarray  # [Q − 1, j − 1]: P(the prompt's own pass holds j prompts | that Q)
    extra: np.ndarray  # [j − 1, ·]: ms a pass of j prompts takes beyond the prompt's pass alone (points)
    own_mean: float  # prompts in its own pass, on average


# the chain of ``_batch_sizes`` follows queues of this many full passes, at least MIN_STATES prompts, and
# further (doubling, up to MAX_STATES prompts) while its stationary law still reaches its end
QUEUE_STATES = 8
MIN_STATES = 32
MAX_STATES = 512


def _batch_sizes(rate: float, laws: list[Law], extra_ms: np.ndarray) -> BatchSizes:
    """The sizes of passes: ``rate`` prompts/s per replica, ``laws[j − 1]`` the law of a pass of j prompts
    (ms, probabilities: ``_pass_laws``).

    A free replica takes the prompts queued (up to kmax); the rest, and those arriving during its pass,
    are the queue the next pass starts with — with R replicas, the next to free: Q' = Q − min(Q, kmax) +
    A, A ~ Poisson(λ/R · T) mixed over the pass's law T (a long prompt's pass gathers more), and Q' = 0
    is an idle replica that the next prompt finds (it runs alone). This is the bulk-service queue's
    embedded chain (Bailey, "On queueing processes with bulk service", JRSS B 16, 1954), exact for one
    replica; its stationary law π(Q) is solved on a truncated state space, and a random instant falls in
    a pass length-biased, π(Q)·E[T]. A prompt that waits arrives during such a pass and shares its own
    with the queue left behind and the other arrivals of that pass: min(kmax, Q − min(Q, kmax) + 1 + A).

    So its own pass is a distribution, tied to the pass it waits for, not one size: one mean-size pass
    under-priced a one-replica llama3-70b pool's p99 by a third against a replay at half load, where
    batches are small and random; and under heavy load the queue left behind fills the passes — without
    it a one-replica pool near saturation was priced at 3× the replay's p99."""
    kmax = len(laws)
    mean_s = np.asarray([float((v * w).sum()) for v, w in laws]) / 1e3
    states = max(QUEUE_STATES * kmax, MIN_STATES)
    while True:
        q = np.arange(1, states + 1)
        size = np.minimum(q, kmax)
        t = mean_s[size - 1]
        per_size = np.stack([w @ _poisson_rows(rate * v / 1e3, states) for v, w in laws])
        arrivals = per_size[size - 1]  # [Q − 1, A]: P(A = 0 … n − 1, ≥ n)
        left = q - size
        after = np.minimum(left[:, None] + np.arange(states + 1)[None, :], states)  # Q' per A
        nxt = _accumulate(q, np.maximum(after, 1), arrivals, states, states)
        # the stationary law: π (P − I) = 0, Σ π = 1 (one balance equation replaced by the normalisation)
        lhs = nxt.T - np.eye(states)
        lhs[-1] = 1.0
        rhs = np.zeros(states)
        rhs[-1] = 1.0
        pi = np.clip(np.linalg.solve(lhs, rhs), 0.0, None)
        if pi[-states // 4 :].sum() < 1e-5 * pi.sum() or states >= MAX_STATES:
            break
        states *= 2  # the queue reaches the chain's end: follow it further
    seen = pi * t / float((pi * t).sum())
    own = np.minimum(left[:, None] + 1 + np.arange(states + 1)[None, :], kmax)
    given = _accumulate(q, own, arrivals, states, kmax)
    own_law = seen @ given
    return BatchSizes(seen, size, given, extra_ms, float((own_law * np.arange(1, kmax + 1)).sum()))


def _accumulate(
    rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int, n_cols: int
) -> np.ndarray:
    """An [n_rows, n_cols] matrix whose cell (r, c) sums the weights[i, a] with rows[i] = r and
    cols[i, a] = c (1-based), added in the same order as ``np.add.at`` would, by one ``np.bincount``."""
    flat = ((rows[:, None] - 1) * n_cols + cols - 1).ravel()
    return np.bincount(flat, weights=weights.ravel(), minlength=n_rows * n_cols).reshape(n_rows, n_cols)


def _poisson_rows(means: np.ndarray, n: int) -> np.ndarray:
    """Per mean, one row: P(A = 0), …, P(A = n − 1), P(A ≥ n) of a Poisson count A."""
    out = np.empty((len(means), n + 1))
    out[:, 0] = np.exp(-means)
    # P(A = i) = P(A = i − 1)·m/i, all i at once
    out[:, 1:n] = out[:, :1] * np.cumprod(means[:, None] / np.arange(1, n)[None, :], axis=1)
    out[:, n] = np.clip(1.0 - out[:, :n].sum(axis=1), 0.0, None)
    return out


def batched_wait(
    lam: float,
    pts: list[Point],
    probs: list[float],
    servers: int,
    ca2: float,
    chain: tuple[list[Law], BatchSizes],
) -> np.ndarray:
    """Points of a waiting prompt's wait (its own pass beyond its pass alone included) in a pool whose
    passes hold up to kmax > 1 prompts, from the chain of ``_batch_sizes``. Per state Q of the pass it
    waits for: the time until the soonest busy replica frees (``residual_min``: on one replica that very
    pass; on several, the soonest of passes of every size, weighted by how often each size runs); the
    prompts ahead of it, the Q − min(Q, kmax) left behind and Poisson(λ·elapsed) since the last replica
    freed (elapsed is distributed as the residual, a stationary renewal's backward and forward times;
    reversed, the two sum to one pass for deterministic passes on one replica); ⌊ahead / kmax⌋ full
    passes before its own (T_kmax / R each; their sum normal, shorter by the heavy-traffic factor
    (1 + c_a²)/2 for smoother arrivals); and its own pass, full when it waited for others, else as
    ``BatchSizes.given``. A queue is cleared kmax prompts a pass, which the per-prompt M/G/1 sum of
    residuals of batch 1 does not know."""
    kmax = len(pts[0][3])
    laws, sizes = chain
    extra = sizes.extra
    full_v, full_w = laws[-1]
    full_mean = float((full_v * full_w).sum())
    full_sd = math.sqrt(max(0.0, float((full_v**2 * full_w).sum()) - full_mean**2))
    scale = (1.0 + ca2) / 2.0 / servers
    states = len(sizes.seen)
    most = states // kmax + 1  # full passes ahead, at most
    n = np.arange(1, most + 1)[:, None]
    # n full passes: their sum's quantiles (normal, its mean and spread n and √n times one pass's)
    later_ms = np.maximum(n * full_mean + np.sqrt(n) * full_sd * _SPREAD[None, :], 0.0) * scale + float(
        extra[-1].mean()
    )
    common = None
    if servers > 1:  # the other busy replicas run passes of any size: the soonest to end, over all sizes
        freq = np.bincount(sizes.size - 1, weights=sizes.seen, minlength=kmax)
        freq = freq / np.asarray([float((v * w).sum()) for v, w in laws])  # passes, not time, per size
        passes_all = [pt[3][j] for j in range(kmax) for pt in pts]
        common = residual_min(passes_all, [f * p for f in freq / freq.sum() for p in probs], servers)[2::4]
    live = np.flatnonzero(sizes.seen > 1e-6)
    # the states share their residual (several replicas), or those of one pass size do (one replica):
    # their weights are summed first, so the points are sorted once per residual, not once per state
    groups = [live] if common is not None else [live[sizes.size[live] == k] for k in range(1, kmax + 1)]
    vals, wts = [], []
    for idx in groups:
        if not len(idx):
            continue
        k = int(sizes.size[idx[0]])
        residual = residual_min([pt[3][k - 1] for pt in pts], probs, 1)[2::4] if common is None else common
        # the time since the last replica freed is distributed as the time to the next (stationary
        # renewal); reversed, the two sum to one pass for deterministic passes on one replica
        elapsed = residual[::-1] / 1e3
        at_most = np.concatenate(
            [np.zeros((len(elapsed), 1)), np.cumsum(_poisson_rows(lam * elapsed, states), 1)], 1
        )
        # P(≥ m full passes ahead) = P(left + A ≥ m·kmax), A the arrivals since the last free: [u, state, m]
        left = (idx + 1 - sizes.size[idx])[:, None]
        cut = np.clip(np.arange(most + 1)[None, :] * kmax - left, 0, states + 1)
        at_least = 1.0 - at_most[:, cut]
        at_least[:, :, 0] = 1.0
        ahead = -np.diff(at_least, axis=2, append=0.0)  # P(exactly m) = P(≥ m) − P(≥ m + 1)
        w = sizes.seen[idx] / len(residual)
        own = np.einsum("i,ui,ij->uj", w, ahead[:, :, 0], sizes.given[idx])  # its own pass is the next
        vals.append(np.add.outer(residual, extra).ravel())
        wts.append(np.repeat(own / EXTRA_POINTS, EXTRA_POINTS))
        vals.append((residual[:, None, None] + later_ms[None, :, :]).ravel())
        wts.append(np.repeat(np.einsum("i,uim->um", w, ahead[:, :, 1:]) / len(_SPREAD), len(_SPREAD)))
    return points(np.concatenate(vals), np.concatenate(wts))


_SPREAD = np.asarray([-1.2816, -0.5244, 0.0, 0.5244, 1.2816])  # standard normal at 0.1, 0.3, … 0.9


def chain(rate: float, pts: list[Point], probs: list[float]) -> tuple[list[Law], BatchSizes]:
    """The pass laws and the batch sizes of one class of prompts at ``rate`` per replica; one pass size
    (batch 1, or prompts long enough to fill the chunk budget alone) needs no chain."""
    cached, extra = _pass_laws(tuple(pts), tuple(probs))
    laws = list(cached)
    if len(laws) == 1:
        one = np.ones(1)
        return laws, BatchSizes(one, one.astype(int), np.ones((1, 1)), extra, 1.0)
    return laws, _batch_sizes(rate, laws, extra)


@lru_cache(maxsize=1 << 10)  # the same lengths, priced on the same replica, recur across replica counts
def _pass_laws(pts: tuple[Point, ...], probs: tuple[float, ...]) -> tuple[tuple[Law, ...], np.ndarray]:
    """Per size j = 1 … kmax: the law of a pass of j prompts drawn from the lengths — the sum of j
    per-prompt shares of a pass of that size, as ``WAIT_POINTS`` equal-probability points (ms) — and
    ``EXTRA_POINTS`` equal-probability points of what such a pass takes beyond one of its prompts' pass
    alone: the other j − 1 prompts' shares, and the prompt's own share less its pass alone (its mean)."""
    kmax = len(pts[0][3])
    p = np.asarray(probs)
    alone = np.asarray([pt[1] for pt in pts])
    laws: list[Law] = []
    extra = np.zeros((kmax, EXTRA_POINTS))
    for j in range(1, kmax + 1):
        whole = np.asarray([pt[3][j - 1] for pt in pts])
        share = whole / np.asarray([max(1, min(PREFILL_CHUNK_TOKENS // pt[4], j)) for pt in pts])
        own = float((p * (share - alone)).sum())
        others: tuple[np.ndarray, np.ndarray] = (np.zeros(1), np.ones(1))
        for _ in range(j - 1):
            others = (points(np.add.outer(others[0], share).ravel(), np.outer(others[1], p).ravel()), EQUAL)
        law = (points(np.add.outer(others[0], share).ravel(), np.outer(others[1], p).ravel()), EQUAL)
        laws.append(law)
        extra[j - 1] = np.maximum(
            points(others[0], others[1])[WAIT_POINTS // EXTRA_POINTS // 2 :: WAIT_POINTS // EXTRA_POINTS]
            + own,
            0.0,
        )
    for arr in (extra, *(v for v, _ in laws)):
        arr.flags.writeable = False  # shared by every caller of the cache
    return tuple(laws), extra


def points(vals: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """``WAIT_POINTS`` equal-probability points of a weighted sample."""
    # stable: merges the sorted runs that sums of points come in (equal values pick the same points anyway)
    order = np.argsort(vals, kind="stable")
    cum = np.cumsum(wts[order])
    out: np.ndarray = vals[order][np.minimum(np.searchsorted(cum, U * cum[-1]), len(vals) - 1)]
    return out


def sum_points(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``WAIT_POINTS`` equal-probability points of A + B, A and B independent, each given as
    ``WAIT_POINTS`` equal-probability points: the middle of each 1/``WAIT_POINTS`` of the sorted sums. (A
    stable sort merges the sums' runs, which are sorted when ``b`` is: several times faster here.)"""
    out: np.ndarray = np.sort(np.add.outer(a, b).ravel(), kind="stable")[WAIT_POINTS // 2 :: WAIT_POINTS]
    return out


def combine_waits(parts: list[tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The sum of independent pool waits, each 0 with probability 1 − p and else ``points`` (equal
    probability), as (support ascending, P(W > support)) — convolved numerically, resampled to keep the
    support short."""
    vals = np.zeros(1)
    wts = np.ones(1)
    for p, pts in parts:
        if p <= 0.0:
            continue
        v2 = np.concatenate([[0.0], pts])
        w2 = np.concatenate([[1.0 - p], np.full(len(pts), p / len(pts))])
        vals = (vals[:, None] + v2[None, :]).ravel()
        wts = (wts[:, None] * w2[None, :]).ravel()
        if len(vals) > 4 * WAIT_POINTS:
            order = np.argsort(vals)
            vals, wts = vals[order], wts[order]
            cum = np.cumsum(wts)
            # keep the atom at 0 and resample the rest at quantiles of the positive part
            zero = float(wts[vals <= 0.0].sum())
            qs = zero + (1.0 - zero) * (np.arange(2 * WAIT_POINTS) + 0.5) / (2 * WAIT_POINTS)
            idx = np.minimum(np.searchsorted(cum, qs), len(vals) - 1)
            vals = np.concatenate([[0.0], vals[idx]])
            wts = np.concatenate([[zero], np.full(2 * WAIT_POINTS, (1.0 - zero) / (2 * WAIT_POINTS))])
    order = np.argsort(vals)
    vals, wts = vals[order], wts[order]
    exceed = 1.0 - np.cumsum(wts)  # P(W > vals[i])
    return vals, np.clip(exceed, 0.0, 1.0)
