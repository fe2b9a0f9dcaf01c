"""A plan held fixed under a steady load: the measurement ``validate`` and ``oracle`` are built on.

A steady load is Poisson arrivals at ``rate_rps`` for ``seconds`` with lengths from a named mix
(``opscale.sim.mixes``). The plan runs as a ``static`` policy (its pools, GPUs per replica and batch
sizes, replicas ready at t=0) and the run lasts until every request is done. Requests arriving in the
first ``warmup_s`` are load but not measured (the pools start empty).

What is measured, over the measured requests that are *servable* (``unservable`` below: the same
definition the planners use, so prediction and measurement cover the same requests):

* p99 TTFT, and p99 of the per-request TBT — a request's mean gap between tokens, the gap before its
  second token included (what SLO attainment counts) — and p99 time to the second token, where a wait
  for KV memory would show;
* the share meeting each SLO and both; rejected and unfinished requests count as misses (infinite);
* GPUs: whole (Σ replicas × GPUs per replica) and as placed (``opscale.placement.place``, mean over
  the run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from opscale.model import PerfModel, get_preset, perf_model
from opscale.policy.planner_loads import fastest_prefill_ms, largest_kv_tokens
from opscale.policy.types import SLO, PoolKey, PoolPlan, plan_gpus
from opscale.sim.mixes import get_mix
from opscale.sim.run import SimResult, simulate
from opscale.sim.traces import Trace
from opscale.spec import parse_spec

MAX_RATE_RPS = 100_000.0
MAX_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class Steady:
    """A steady synthetic load for one model under one SLO."""

    model: str
    rate_rps: float
    mix: str = "fixed"
    ttft_ms: float = 2000.0
    tbt_ms: float = 100.0
    gpu_type: str = "H100"
    seconds: float = 240.0
    warmup_s: float = 40.0

    @property
    def slo(self) -> SLO:
        return SLO(self.ttft_ms, self.tbt_ms)

    def perf(self) -> PerfModel:
        return perf_model(get_preset(self.model), self.gpu_type)


def steady_trace(load: Steady, seed: int) -> Trace:
    if not (0.0 < load.rate_rps <= MAX_RATE_RPS and math.isfinite(load.rate_rps)):
        raise ValueError(f"rate must be in (0, {MAX_RATE_RPS:g}] req/s, got {load.rate_rps}")
    rng = np.random.default_rng(seed)
    n = int(load.rate_rps * load.seconds * 1.3) + 50
    t = np.cumsum(rng.exponential(1.0 / load.rate_rps, size=n))
    t = t[t < load.seconds]
    inp, out = get_mix(load.mix)(len(t), rng)
    return Trace(f"poisson-{load.rate_rps:g}-{load.mix}", t, inp, out)


def unservable(perf: PerfModel, inputs: np.ndarray, outputs: np.ndarray, slo: SLO) -> np.ndarray:
    """Requests no configuration serves within the SLO: prefill alone on a whole 8-GPU replica slower
    than the TTFT SLO, or KV (prompt + output) larger than such a replica's KV pool — the planners'
    definition (``planner_stage``), so what they exclude and what is measured without it agree."""
    prompts = np.unique(inputs)
    slow = [int(n) for n in prompts if fastest_prefill_ms(perf, int(n)) > slo.ttft_ms]
    too_long = np.isin(inputs, np.asarray(slow, dtype=np.int64))
    too_big = (inputs + outputs) > largest_kv_tokens(perf)
    out: np.ndarray = too_long | too_big
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    requests: int  # measured (servable, after warm-up)
    unservable: int
    ttft_p99_ms: float
    tbt_p99_ms: float  # per request
    ttst_p99_ms: float
    ttft_ok: float  # share meeting the TTFT SLO
    tbt_ok: float
    attainment: float  # both
    rejected: int
    unfinished: int
    gpus: int  # Σ replicas × GPUs per replica, shares packed (plan_gpus)
    gpus_placed: float
    memory_violations: int

    def meets(self, slo: SLO) -> bool:
        """p99 TTFT and p99 per-request TBT within the SLO, and nothing rejected or left unfinished."""
        return (
            self.ttft_p99_ms <= slo.ttft_ms
            and self.tbt_p99_ms <= slo.tbt_ms
            and self.rejected == 0
            and self.unfinished == 0
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def static_spec(load: Steady, pools: Mapping[PoolKey, PoolPlan]) -> Any:
    return parse_spec(
        {
            "name": "fixed",
            "model": {"preset": load.model},
            "gpu_type": load.gpu_type,
            "policy": "static",
            "slo": {"ttft_ms": load.ttft_ms, "tbt_ms": load.tbt_ms},
            "limits": [{"min_replicas": 0, "max_replicas": 10_000}],
            "static_params": {
                "pools": [
                    {
                        "pool": {"stage": k.stage, "operator": k.operator},
                        "replicas": v.replicas,
                        "gpus_per_replica": v.gpus_per_replica,
                        "batch_size": v.batch_size or 64,
                        "gpu_share": v.gpu_share,
                        "micro_batches": v.micro_batches,
                    }
                    for k, v in pools.items()
                ]
            },
        }
    )


def run_plan(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> Outcome:
    return run_sampled(load, pools, seed)[0]


@dataclass(frozen=True, slots=True)
class Samples:
    """The measured requests' own values (ms), for percentiles over several traces pooled."""

    ttft_ms: np.ndarray  # every measured request
    tbt_ms: np.ndarray  # those that decode (per-request TBT)
    ttst_ms: np.ndarray  # those that decode (time from the first token to the second)


def run_sampled(load: Steady, pools: Mapping[PoolKey, PoolPlan], seed: int = 0) -> tuple[Outcome, Samples]:
    trace = steady_trace(load, seed)
    res = simulate(static_spec(load, pools), trace, dict(pools))
    return measure(load, res, trace, plan_gpus(pools.values()))


def pooled_p99(samples: Sequence[np.ndarray]) -> float:
    """The p99 over the requests of several traces together (``_p99``)."""
    return _p99(np.concatenate(list(samples))) if samples else 0.0


def _p99(values: np.ndarray) -> float:
    """The p99, infinite when it falls among the infinite values of rejected or unfinished requests
    (numpy's interpolation between two infinities gives NaN, with a warning)."""
    if not len(values):
        return 0.0
    with np.errstate(invalid="ignore"):
        p = float(np.percentile(values, 99))
    return math.inf if math.isnan(p) else p


def measure(load: Steady, res: SimResult, trace: Trace, gpus: int) -> tuple[Outcome, Samples]:
    req = res.requests
    slo = load.slo
    bad = unservable(load.perf(), trace.input_tokens, trace.output_tokens, slo)
    sel = (req.arrival_s >= load.warmup_s) & ~bad
    done = ~np.isnan(req.finish_s)
    lost = ~done
    ttft = np.where(lost | np.isnan(req.ttft_s), math.inf, req.ttft_s * 1e3)[sel]
    has_tbt = req.tbt_n > 0
    tpot = np.where(has_tbt, req.tbt_sum_s / np.maximum(req.tbt_n, 1), 0.0) * 1e3
    tpot = np.where(lost, math.inf, tpot)
    decoding = sel & (has_tbt | lost) & (req.output_tokens > 1)
    ttst = np.where(lost, math.inf, np.nan_to_num(req.ttst_s, nan=0.0) * 1e3)
    n = int(sel.sum())
    ttft_ok = ttft <= slo.ttft_ms
    tbt_all = tpot[sel]
    tbt_ok = tbt_all <= slo.tbt_ms
    out = Outcome(
        requests=n,
        unservable=int(bad.sum()),
        ttft_p99_ms=_p99(ttft),
        tbt_p99_ms=_p99(tpot[decoding]),
        ttst_p99_ms=_p99(ttst[decoding]),
        ttft_ok=float(ttft_ok.mean()) if n else 1.0,
        tbt_ok=float(tbt_ok.mean()) if n else 1.0,
        attainment=float((ttft_ok & tbt_ok).mean()) if n else 1.0,
        rejected=int((req.rejected & sel).sum()),
        unfinished=int((lost & ~req.rejected & sel).sum()),
        gpus=gpus,
        gpus_placed=float(res.gpus.mean()) if len(res.gpus) else 0.0,
        memory_violations=res.memory_violations,
    )
    return out, Samples(ttft, tpot[decoding], ttst[decoding])
