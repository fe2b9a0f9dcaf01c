"""The decode step model shared by the planners and their predictions: a token round's passes per pool,
the step at N residents, its fixed point with Little's law, the residents' spread and the per-request
TBT quantile (``planner_decode``'s docstring has the derivation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from opscale.model import PerfModel
from opscale.policy.decode_load import DecodeLoad
from opscale.policy.planner_core import Option, Unit, memory, pass_ms

MAX_ELASTICITY = 0.9  # ε above this: the residents' spread is taken as 10× Poisson's (near saturation)
SLOT_TAIL = 10  # the slots take the residents' 1 − (1 − q)/10 quantile (planner_decode's docstring)
CONTEXT_STEP = 0.1  # the step's elasticity in the residents' context, over a 10% longer context


def holder(unit: Unit) -> bool:
    return "attention" in unit.ops


def capped(unit: Unit) -> bool:
    """A whole-model decode replica: its batch caps its running sequences (an engine's max_num_seqs)."""
    return unit.pool.operator == "model" and holder(unit)


def per_replica(n: float, replicas: int, batch: int, cap: bool = False) -> tuple[int, float]:
    """(sequences per pass, passes per round) for ``n`` residents over ``replicas`` at pass size ``batch``.
    An operator pool runs the fewest passes, split evenly; a whole-model replica (``cap``) runs at most
    ``batch`` at once and the surplus waits for a slot, which stretches a resident's mean time per token
    by n/(replicas·batch): fluid, as that mean is (``planner_decode``'s docstring)."""
    per_rep = max(1, math.ceil(n / replicas - 1e-9))
    if cap:
        return min(batch, per_rep), max(1.0, n / (replicas * batch))
    k = math.ceil(per_rep / batch)
    return math.ceil(per_rep / k), k


def micro_split(per: int, passes: float, micro: int) -> tuple[int, float]:
    """(micro-batch size, passes per round) when each pass of ``per`` sequences is split into ``micro``
    micro-batches (never more micro-batches than sequences)."""
    mu = max(1, min(micro, per))
    return math.ceil(per / mu), passes * mu


def step_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    n: float,
    kv_len: int,
    hop_ms: Callable[[int], float],
    micro: int = 1,
) -> float:
    """One token round for ``n`` residents: the simulator's formula (module docstring)."""
    lat, worst, hop_tokens = 0.0, 0.0, 0
    for unit, o in path:
        per, k = per_replica(max(n, 1.0), o.replicas, o.batch, capped(unit))
        m, passes = micro_split(per, k, micro)
        s = pass_ms(perf, unit, m, kv_len, o.gpus)
        lat += s
        worst = max(worst, passes * s)
        hop_tokens = max(hop_tokens, m)
    return max(lat + hop_ms(hop_tokens), worst)


def fixed_point_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    load: DecodeLoad,
    hop_ms: Callable[[int], float],
    micro: int = 1,
) -> float:
    """τ* = τ(N̄(τ*)); ``inf`` when none exists (the pools cannot keep up with the load)."""
    tau = step_ms(perf, path, 1.0, load.kv_len, hop_ms, micro)
    for _ in range(200):
        nxt = step_ms(perf, path, load.residents(tau), load.kv_len, hop_ms, micro)
        if nxt > 1e7:
            return math.inf
        if abs(nxt - tau) <= 1e-6 * tau:
            return nxt
        tau = nxt
    return tau if tau < 1e7 else math.inf


def dispersion(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    load: DecodeLoad,
    hop_ms: Callable[[int], float],
    micro: int,
    tau_ms: float,
) -> float:
    """Var[N]/N̄ of the residents at the fixed point τ* (``planner_decode``'s docstring):
    1/(1 − ε) + a²·c²/(1 − ε)², with ε = d ln τ / d ln N from the step's slope over one standard deviation
    of N, a = d ln τ / d ln L its elasticity in the residents' mean context, and c² the SCV of one
    resident's context."""
    n = load.residents(tau_ms)
    if n <= 0.0 or not math.isfinite(tau_ms):
        return 1.0
    h = max(1.0, math.sqrt(n))
    at = step_ms(perf, path, n, load.kv_len, hop_ms, micro)
    more = step_ms(perf, path, n + h, load.kv_len, hop_ms, micro)
    longer = step_ms(perf, path, n, round(load.kv_len * (1.0 + CONTEXT_STEP)), hop_ms, micro)
    slack = 1.0 - min(max((more - at) / at * n / h, 0.0), MAX_ELASTICITY)
    a = max(0.0, (longer - at) / at / CONTEXT_STEP)
    c2 = max(0.0, load.ctx_m2 / (load.kv_len * load.kv_len) - 1.0) if load.kv_len > 0 else 0.0
    return 1.0 / slack + a * a * c2 / (slack * slack)


def slot_quantile(q: float) -> float:
    """The quantile of the residents the holder's slots are sized for: 1 − (1 − q)/``SLOT_TAIL``."""
    return 1.0 - (1.0 - q) / SLOT_TAIL


def holds_residents(
    perf: PerfModel, path: Sequence[tuple[Unit, Option]], load: DecodeLoad, tau_ms: float, disp: float
) -> bool:
    """Whether the KV holder's KV memory takes the residents' q-quantile at τ*, and a whole-model
    holder's running slots their ``slot_quantile`` (``planner_decode``'s docstring)."""
    for unit, o in path:
        if holder(unit):
            kv = o.replicas * memory(perf, unit, o.batch, o.gpus).kv_tokens()
            slots = o.replicas * o.batch if capped(unit) else math.inf
            need = load.residents_q(tau_ms, disp, slot_quantile(load.q))
            if slots < need or kv < load.kv_tokens_q(tau_ms, disp):
                return False
    return True


def tbt_quantile_ms(
    perf: PerfModel,
    path: Sequence[tuple[Unit, Option]],
    load: DecodeLoad,
    hop_ms: Callable[[int], float],
    micro: int = 1,
) -> tuple[float, float, float]:
    """(per-request TBT at the quantile, the mean step τ*) in ms, and the residents' ``dispersion`` there."""
    tau = fixed_point_ms(perf, path, load, hop_ms, micro)
    if not math.isfinite(tau):
        return math.inf, math.inf, 1.0
    disp = dispersion(perf, path, load, hop_ms, micro, tau)
    at_q = step_ms(perf, path, load.residents_q(tau, disp), load.context_q(tau), hop_ms, micro)
    # The step's quantile and the hand-off's are not reached by the same requests: each with the other's
    # typical value, the larger.
    return max(at_q + load.transfer_mean_ms, tau + load.transfer_q_ms), tau, disp
