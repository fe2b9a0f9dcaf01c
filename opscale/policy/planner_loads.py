"""What each stage of a plan must carry, from a load window: rate, prompt lengths (all that arrive, and
the share of each the percentile is planned over), and decode's residency moments.

Lengths. The window's prompt and output length distributions (``LoadWindow.inputs()/outputs()``;
the means when only those are known) drive everything: prefill is priced per prompt length
(``planner_prefill``), decode's residency and KV by the length-biased moments of the resident
sequences (``planner_decode``). Prompt and output lengths are taken as independent (ingest keeps
their marginals, not their joint).

Unservable requests. A prompt whose prefill alone, on the fastest replica there is (the whole model on
one 8-GPU node), takes longer than the TTFT SLO, or a request whose KV (prompt + output) does not fit
one such replica's KV pool, cannot meet the SLO under any plan. Their share is computed, reported (in
the prediction, the reasons and an ``UNSERVABLE_REQUESTS`` infeasibility) and excluded: the percentile
is planned over the servable requests, and the unservable ones still count as load where they run.

Estimation error. A window's rate and prompt mix are an estimate: the prefill work offered over T
seconds, Σ S_i / T over the N = λT prompts seen, is a compound Poisson sum whose relative standard error is
√((1 + c²)/N), c² the squared coefficient of variation of one prompt's work (its prefill on the whole
model). A prefill pool is planned busy up to ρ 0.9 (``planner_prefill.RHO_MAX``), where its p99 wait moves
by about ρ/(1 − ρ) — nine — times the load's relative change; so prefill pools are sized for the
estimate's one-sided 95% upper bound, λ(1 + ``ESTIMATE_Z``·√((1 + c²)/N)) (``PrefillLoad.sized_rps``), and
the TTFT is predicted at the measured λ. Measured: llama3-70b at 20 req/s of the ShareGPT mix, planned
from one 240 s trace (4,709 prompts, 19.6 req/s): six 2-GPU replicas at ρ 0.90, predicted p99 TTFT 1.97
s; eight traces of that load ran those replicas at ρ 0.90–0.97, pooled p99 4.5 s, and one trace attained
58%. Sized at the bound (+3.1%), seven replicas: 1.06 s predicted at the measured rate, 1.13 s
measured, every trace in SLO.

Decode's residents are sized the same way, one request's work the o tokens it decodes
(``DecodeLoad.sized_rps``): the KV holder's slots and KV take the residents' quantiles at the bound, and
the mean step is predicted at the measured λ.

A window with a spread (``LoadWindow.rate_spread_rps`` σ_h, the forecast's burst over a replica's start-up:
``opscale.policy.adaptive``) is sized for λ + Z·√(σ_e² + σ_h²), σ_e = λ·√((1 + c²)/N) the estimate's error
above: the two are independent, and the bound of their sum is what the plan must carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from opscale.model import PerfModel
from opscale.model.fabric import KV_LINK_BYTES_S
from opscale.model.memory import replica_memory
from opscale.policy.decode_load import DecodeLoad
from opscale.policy.lengths import LengthDist
from opscale.policy.planner_core import MAX_NODE_GPUS
from opscale.policy.prefill_queue import PrefillLoad
from opscale.policy.types import SLO, LoadWindow

ESTIMATE_Z = 1.645  # prefill is sized for the measured load's one-sided 95% upper bound
ESTIMATE_MAX = 1.0  # ... and at most twice the measured rate (a window of a handful of prompts)


def sized_rate(
    perf: PerfModel,
    rate_rps: float,
    window_s: float,
    lengths: tuple[tuple[int, float], ...],
    spread_rps: float = 0.0,
) -> float:
    """The prompt rate prefill is sized for (module docstring): the window's ``rate_rps`` over
    ``window_s`` seconds, raised by the error of the prefill work it estimates and ``spread_rps``."""
    return rate_bound(rate_rps, window_s, [(fastest_prefill_ms(perf, n), p) for n, p in lengths], spread_rps)


def rate_bound(
    rate_rps: float, window_s: float, work: list[tuple[float, float]], spread_rps: float = 0.0
) -> float:
    """``rate_rps`` raised to the one-sided 95% upper bound of the work it carries over ``window_s``
    seconds, ``work`` the (work of one request, probability) pairs, and of ``spread_rps`` (the
    forecast's burst, ``LoadWindow.rate_spread_rps``) taken with it in quadrature (module docstring)."""
    seen = rate_rps * window_s
    if seen <= 0.0:
        return rate_rps
    mean = sum(w * p for w, p in work)
    scv = sum(w * w * p for w, p in work) / (mean * mean) - 1.0 if mean > 0.0 else 0.0
    error = rate_rps * min(ESTIMATE_MAX / ESTIMATE_Z, math.sqrt((1.0 + max(0.0, scv)) / seen))
    return rate_rps + ESTIMATE_Z * math.hypot(error, spread_rps)


def _bucket(tokens: float) -> int:
    """Lengths rounded to 2^(1/16) steps (as the simulator prices them), so caches hit between ticks."""
    r = 2 ** (1 / 16)
    return max(1, round(r ** round(math.log(max(tokens, 1.0), r))))


@dataclass(frozen=True, slots=True)
class StageLoads:
    prefill: PrefillLoad
    decode: DecodeLoad
    unservable: float  # share of requests no configuration can serve within the SLO
    inputs: LengthDist  # the window's, all requests
    outputs: LengthDist


@lru_cache(maxsize=1 << 12)
def fastest_prefill_ms(perf: PerfModel, tokens: int) -> float:
    """One prompt alone on the whole model over one 8-GPU node: the fastest prefill there is."""
    return sum(
        perf.pass_latency_ms("prefill", s.kind, 1, tokens, MAX_NODE_GPUS) for s in perf.operators("prefill")
    )


def largest_kv_tokens(perf: PerfModel) -> float:
    """Tokens of context one request may reserve on the largest decode replica (whole model, 8 GPUs)."""
    ops = tuple(s.kind.value for s in perf.operators("decode"))
    return replica_memory(perf.shape, perf.gpu, "decode", ops, 1, MAX_NODE_GPUS).kv_tokens()


def _servable(
    perf: PerfModel, inputs: LengthDist, out_pts: list[tuple[float, float]], kv_max: float, slo: SLO
) -> tuple[dict[int, list[float]], float]:
    """Per bucketed prompt length [P(arrives, fits), P(servable)], and the unservable share."""
    points: dict[int, list[float]] = {}
    unservable = 0.0
    for n, p in inputs.points():
        fits = sum(po for o, po in out_pts if n + o <= kv_max)
        slow = fastest_prefill_ms(perf, _bucket(n)) > slo.ttft_ms
        unservable += p * (1.0 if slow else 1.0 - fits)
        if fits <= 0.0:
            continue
        acc = points.setdefault(_bucket(n), [0.0, 0.0])
        acc[0] += p * fits
        acc[1] += 0.0 if slow else p * fits
    # 1 − Σ p of outputs that all fit leaves rounding (1e-16): not a share of requests to report
    return points, unservable if unservable > 1e-12 else 0.0


def stage_loads(perf: PerfModel, load: LoadWindow, slo: SLO) -> StageLoads:
    """What each stage must carry. Every request loads the stages it reaches (an unservable prompt still
    occupies a prefill replica, and decodes afterwards); the percentile is planned over the servable
    ones. A request whose KV fits no replica at all is rejected by any engine and loads nothing."""
    inputs, outputs = load.inputs(), load.outputs()
    kv_max = largest_kv_tokens(perf)
    out_pts = outputs.points()
    points, unservable = _servable(perf, inputs, out_pts, kv_max, slo)
    if not points:  # nothing fits anywhere: plan for the shortest prompt so a plan still exists
        points = {_bucket(inputs.tokens[0]): [1.0, 1.0]}
    # Other estimates of the prompts (LoadWindow.input_tokens_also) add only percentile weightings: the
    # load is priced on ``inputs``, and their lengths join the grid with no load of their own.
    alts = [_servable(perf, d, out_pts, kv_max, slo)[0] for d in load.input_tokens_also if d != inputs]
    for alt in alts:
        for n in alt:
            points.setdefault(n, [0.0, 0.0])
    share = sum(a for a, _ in points.values())
    lam, burst = load.arrival_rate_rps * share, load.rate_spread_rps * share
    keys = sorted(points)
    lengths = tuple((n, points[n][0] / share) for n in keys)
    target = tuple(points[n][1] / points[n][0] if points[n][0] > 0 else 0.0 for n in keys)
    also = tuple(tuple(alt.get(n, [0.0, 0.0])[1] for n in keys) for alt in alts)
    q = slo.quantile
    pre = PrefillLoad(lam, lengths, target, q, also, sized_rate(perf, lam, load.window_s, lengths, burst))
    # Decode moments over the requests that fit (prompt and output independent), o = out − 1, weights o.
    e_in = sum(n * p for n, p in lengths)
    e_in2 = sum(n * n * p for n, p in lengths)
    e_in3 = sum(n**3 * p for n, p in lengths)
    os_ = [(max(0.0, o - 1.0), o, p) for o, p in out_pts]
    e_o = sum(d * p for d, _, p in os_)
    if e_o > 0:
        e_o_out = sum(d * o * p for d, o, p in os_)
        e_o_out2 = sum(d * o * o * p for d, o, p in os_)
        e_o_half = sum(d * d / 2 * p for d, _, p in os_)
        e_o2 = sum(d * d * p for d, _, p in os_)
        e_o3 = sum(d**3 * p for d, _, p in os_)
        kv_len = e_in + e_o_half / e_o
        ctx_m2 = e_in2 + e_in * e_o2 / e_o + e_o3 / (3 * e_o)
        res_mean = e_in + e_o_out / e_o
        res_m2 = e_in2 + 2 * e_in * e_o_out / e_o + e_o_out2 / e_o
        e_o_out3 = sum(d * o**3 * p for d, o, p in os_)
        res_m3 = e_in3 + 3 * e_in2 * e_o_out / e_o + 3 * e_in * e_o_out2 / e_o + e_o_out3 / e_o
    else:
        kv_len, res_mean, res_m2, ctx_m2 = e_in, e_in + 1.0, (e_in + 1.0) ** 2, e_in2
        res_m3 = (e_in + 1.0) ** 3
    req_max = max((n + o for n, p in lengths for o, _ in out_pts if p > 0 and n + o <= kv_max), default=1.0)
    # The KV hand-off left after prefill (the last layer's share) delays a request's second token, and
    # counts once among its o token gaps: X = KV(in)/(layers · bandwidth)/o. Its mean and q-quantile over
    # requests (prompt and output independent) enter the per-request TBT prediction.
    per_token_ms = perf.kv_bytes_per_token() / (perf.shape.layers * KV_LINK_BYTES_S) * 1e3
    spread = sorted((n * per_token_ms / d, p * po) for n, p in lengths for d, _, po in os_ if d >= 1.0)
    weight = sum(w for _, w in spread) or 1.0
    x_mean = sum(x * w for x, w in spread) / weight
    cum, x_q = 0.0, 0.0
    for x, w in spread:
        cum += w / weight
        x_q = x
        if cum >= q:
            break
    dec = DecodeLoad(
        lam,
        e_o,
        _bucket(kv_len),
        ctx_m2,
        res_mean,
        res_m2,
        math.ceil(req_max),
        x_mean,
        x_q,
        q,
        res_m3,
        rate_bound(lam, load.window_s, [(d, p) for d, _, p in os_], burst),
    )
    return StageLoads(pre, dec, unservable, inputs, outputs)
