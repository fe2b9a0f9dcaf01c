"""Token-length distributions: what the planners know about prompt and output lengths beyond the mean.

A ``LengthDist`` is a short list of (tokens, probability) points. It comes from the window's length
histogram (``from_bins``: ingest keeps 8 bins per doubling, ~9% wide), from a trace's lengths
(``from_samples``), or from a fixed length (``fixed``), and is compressed into geometric slices — lengths
within 2^(1/4) (19%) of each other become one point at their mean — so that a planner can price every
point on every tick (at most ``MAX_POINTS``; 1 to 128k tokens is 68 slices, so a wider range coarsens
the ratio). Geometric slices keep the same relative resolution everywhere: the tail, where the SLO
percentile and the longest request (memory) are decided, is never averaged into its neighbours, and a
slice's mean carries its E[L²] to within ~1%.

Why more than the mean. Prefill attention costs ~L² per prompt (causal attention does 2·L²·d FLOPs), so a
long-tailed trace priced at E[L] underestimates the attention work by E[L²]/E[L]² (1.8–2.1× on the
long-prompt traces we measured); the percentile of TTFT is decided by the longest prompts; and the KV a
decode pool holds is that of the resident sequences, which are length-biased (a sequence stays resident
in proportion to its output length). Each of these needs the distribution, not its mean.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from opscale.errors import InvalidArgument

MAX_POINTS = 64
SLICE_RATIO = 2**0.25  # a slice spans lengths within 19% of each other
MAX_TOKENS = 10_000_000  # sanity bound on any length (a 10M-token request is a caller's mistake)


@dataclass(frozen=True, slots=True)
class LengthDist:
    """Lengths (tokens, ascending, ≥ 1) and their probabilities (summing to 1)."""

    tokens: tuple[float, ...]
    probs: tuple[float, ...]

    def __post_init__(self) -> None:
        t, p = self.tokens, self.probs
        if not t or len(t) != len(p):
            raise InvalidArgument(
                "a length distribution needs as many probabilities as lengths", field="lengths"
            )
        if any(not (math.isfinite(x) and 1.0 <= x <= MAX_TOKENS) for x in t):
            raise InvalidArgument(f"token lengths must be in [1, {MAX_TOKENS:,}], got {t}", field="lengths")
        if any(b <= a for a, b in itertools.pairwise(t)):
            raise InvalidArgument("token lengths must be strictly ascending", field="lengths")
        if any(not (math.isfinite(x) and x >= 0.0) for x in p) or abs(sum(p) - 1.0) > 1e-6:
            raise InvalidArgument("length probabilities must be >= 0 and sum to 1", field="lengths")

    # --- construction ---------------------------------------------------------------------------------

    @classmethod
    def fixed(cls, tokens: float) -> LengthDist:
        return cls((max(1.0, float(tokens)),), (1.0,))

    @classmethod
    def from_weighted(cls, values: Iterable[float], weights: Iterable[float]) -> LengthDist:
        """From (value, weight) pairs in any order (weights ≥ 0, not all 0); compressed."""
        pairs = sorted((max(1.0, float(v)), float(w)) for v, w in zip(values, weights, strict=True) if w > 0)
        if not pairs:
            raise InvalidArgument("a length distribution needs at least one observation", field="lengths")
        total = sum(w for _, w in pairs)
        return _compress([v for v, _ in pairs], [w / total for _, w in pairs])

    @classmethod
    def from_samples(cls, values: np.ndarray | Sequence[float]) -> LengthDist:
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            raise InvalidArgument("a length distribution needs at least one observation", field="lengths")
        v, c = np.unique(np.maximum(a, 1.0), return_counts=True)
        return _compress(v.tolist(), (c / c.sum()).tolist())

    @classmethod
    def from_bins(
        cls, bins: Sequence[tuple[float, float, int]], lo: float | None = None, hi: float | None = None
    ) -> LengthDist:
        """From histogram bins (lower, upper, count) — each bin stands at its midpoint, the first and
        last narrowed to the observed ``lo`` and ``hi`` when known (the overflow bin needs ``hi``)."""
        vals, wts = [], []
        for i, (lower, upper, count) in enumerate(bins):
            if count <= 0:
                continue
            a = max(lower, lo) if (i == 0 and lo is not None) else lower
            b = min(upper, hi) if hi is not None else upper
            if not math.isfinite(b):
                b = a  # overflow bin without a known max: its lower edge (an underestimate, said here)
            vals.append(max(1.0, 0.5 * (a + b)))
            wts.append(float(count))
        return cls.from_weighted(vals, wts)

    # --- moments and quantiles ------------------------------------------------------------------------

    @property
    def mean(self) -> float:
        return sum(t * p for t, p in zip(self.tokens, self.probs, strict=True))

    def moment(self, k: int) -> float:
        return sum(t**k * p for t, p in zip(self.tokens, self.probs, strict=True))

    @property
    def max(self) -> float:
        return self.tokens[-1]

    def quantile(self, q: float) -> float:
        """The smallest length with cumulative probability ≥ q."""
        acc = 0.0
        for t, p in zip(self.tokens, self.probs, strict=True):
            acc += p
            if acc >= q - 1e-12:
                return t
        return self.tokens[-1]

    def share_above(self, tokens: float) -> float:
        """P(L > tokens)."""
        return sum(p for t, p in zip(self.tokens, self.probs, strict=True) if t > tokens)

    def upper(self, other: LengthDist) -> LengthDist:
        """The upper envelope: at every quantile the longer of the two lengths (so P(L ≤ x) is the
        smaller of the two CDFs); either one itself when it is longer everywhere, else compressed."""
        ca, cb = np.cumsum(self.probs), np.cumsum(other.probs)
        edges = np.unique(np.concatenate([ca, cb, [1.0]]).clip(0.0, 1.0))
        lo = np.concatenate([[0.0], edges[:-1]])
        width = edges - lo
        mid = (lo + edges)[width > 1e-12] / 2.0
        ta, tb = np.asarray(self.tokens), np.asarray(other.tokens)
        at = ta[np.minimum(np.searchsorted(ca, mid - 1e-12), len(ta) - 1)]
        bt = tb[np.minimum(np.searchsorted(cb, mid - 1e-12), len(tb) - 1)]
        if (at >= bt).all():
            return self
        if (bt >= at).all():
            return other
        return LengthDist.from_weighted(np.maximum(at, bt).tolist(), width[width > 1e-12].tolist())

    def scaled(self, factor: float) -> LengthDist:
        return LengthDist(tuple(max(1.0, t * factor) for t in self.tokens), self.probs)

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.tokens, self.probs, strict=True))

    # --- JSON (the decision ledger) -------------------------------------------------------------------

    def to_json(self) -> list[list[float]]:
        return [[t, p] for t, p in zip(self.tokens, self.probs, strict=True)]

    @classmethod
    def from_json(cls, data: object) -> LengthDist:
        if not isinstance(data, list) or not data:
            raise InvalidArgument("a length distribution is a non-empty list of [tokens, probability]")
        try:
            pairs = [(float(t), float(p)) for t, p in data]
        except (TypeError, ValueError):
            raise InvalidArgument("a length distribution is a list of [tokens, probability] pairs") from None
        total = sum(p for _, p in pairs)
        return cls(tuple(t for t, _ in pairs), tuple(p / total for _, p in pairs))


def _compress(values: list[float], probs: list[float]) -> LengthDist:
    """Merge sorted (value, prob) points into geometric slices of ratio ``SLICE_RATIO`` (each slice at its
    mean), coarsening the ratio until at most ``MAX_POINTS`` remain (see the module docstring)."""
    ratio = SLICE_RATIO
    while True:
        out_t: list[float] = []
        out_p: list[float] = []
        edge = 0.0
        acc_w = acc_vw = 0.0
        for v, p in zip(values, probs, strict=True):
            if acc_w > 0 and v >= edge:
                out_t.append(acc_vw / acc_w)
                out_p.append(acc_w)
                acc_w = acc_vw = 0.0
            if acc_w == 0.0:
                edge = v * ratio
            acc_w += p
            acc_vw += v * p
        if acc_w > 0:
            out_t.append(acc_vw / acc_w)
            out_p.append(acc_w)
        if len(out_t) <= MAX_POINTS:
            break
        ratio *= ratio
    total = sum(out_p)
    return LengthDist(tuple(out_t), tuple(p / total for p in out_p))
