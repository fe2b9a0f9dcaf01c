"""What the decode stage must carry, and the residency it implies (``planner_decode``'s docstring has the
derivation: Little's law, the Poisson residents and the Cornish–Fisher quantile of their KV)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def z_of(q: float) -> float:
    return NormalDist().inv_cdf(q)


@dataclass(frozen=True, slots=True)
class DecodeLoad:
    """What the decode stage must carry (servable requests only)."""

    rate_rps: float
    steps_mean: float  # E[o], o = output − 1 decode tokens per request
    kv_len: int  # mean context length of resident sequences (what a step's attention reads)
    ctx_m2: float  # E_r[context²] of resident sequences (the spread of what attention reads)
    res_mean: float  # E_r[in + out]: tokens reserved per resident sequence
    res_m2: float  # E_r[(in + out)²]
    req_max: int  # tokens the longest request reserves (it must fit one replica)
    transfer_mean_ms: float  # the KV hand-off left after prefill, spread over a request's gaps: mean
    transfer_q_ms: float  # … and its q-quantile over requests
    q: float
    res_m3: float = 0.0  # E_r[(in + out)³] (0: unknown, the normal approximation alone)
    sized_rps: float = 0.0  # the rate the quantiles are taken at (``planner_loads.rate_bound``; 0: rate_rps)

    def residents(self, tau_ms: float) -> float:
        return self.rate_rps * self.steps_mean * tau_ms / 1e3

    def _sized_residents(self, tau_ms: float) -> float:
        return max(self.rate_rps, self.sized_rps) * self.steps_mean * tau_ms / 1e3

    def residents_q(self, tau_ms: float, disp: float = 1.0, q: float | None = None) -> float:
        """The q-quantile of the residents (``q``: another quantile), at the sized rate; ``disp``: their
        variance over their mean (1: Poisson; more when the step grows with them,
        ``decode_step.dispersion``)."""
        n = self._sized_residents(tau_ms)
        return n + z_of(self.q if q is None else q) * math.sqrt(n * disp)

    def kv_tokens_q(self, tau_ms: float, disp: float = 1.0) -> float:
        """The q-quantile of the reserved KV (module docstring): Cornish–Fisher on the compound Poisson's
        first three cumulants (κ_j = N̄·E_r[X^j]), the spread widened by ``disp`` as the residents' is."""
        n = self._sized_residents(tau_ms)
        if n <= 0.0:
            return 0.0
        z, sigma = z_of(self.q), math.sqrt(n * self.res_m2 * disp)
        # γ = N̄·m3 / (N̄·m2)^{3/2}, written so that a tiny N̄ cannot underflow the denominator to 0
        skew = (
            self.res_m3 / (math.sqrt(n) * self.res_m2**1.5)
            if self.res_m3 > 0.0 and self.res_m2 > 0.0
            else 0.0
        )
        return n * self.res_mean + sigma * (z + (z * z - 1.0) * skew / 6.0)

    def context_q(self, tau_ms: float) -> int:
        """Mean context a step reads at the quantile: the residents' total context is compound Poisson
        (mean N̄·E_r[c], variance N̄·E_r[c²]); a few long sequences resident at once make attention
        slower than the mean length says, and the quantile of per-request TBT is taken there."""
        n = self._sized_residents(tau_ms)
        if n <= 0.0:
            return self.kv_len
        total = n * self.kv_len + z_of(self.q) * math.sqrt(n * self.ctx_m2)
        return max(self.kv_len, round(total / self.residents_q(tau_ms)))
