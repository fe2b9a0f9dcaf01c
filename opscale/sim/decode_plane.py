"""The decode side of the data plane: KV admission and fluid continuous batching, per path.

**Fluid continuous batching.** The running sequences of a decode path share its pools. With N running
sequences at mean KV length L, pool p (R_p ready replicas, batch limit b_p) runs k_p = ⌈N / (R_p·b_p)⌉
passes of n_p = ⌈N / (R_p·k_p)⌉ sequences per token round (the fewest passes, split evenly), so one
token of every sequence takes

    step = max( Σ_p s_p(n_p, L) + hops(n_p),   max_p k_p · s_p(n_p, L) )

— latency-bound (a token must traverse every pool in turn) or throughput-bound (the slowest pool's
passes: with k ≥ 2 passes the pools work on different ones at once), whichever is larger. A path whose
plan sets μ micro-batches (ping-pong, MegaScale-Infer) splits each pass into μ of ⌈n_p/μ⌉ sequences:
the chain is priced at the micro-batch and each pool runs μ·k_p of them per round — attention of one
micro-batch while the FFN runs another. μ = 1 is the sequential mode.

Each sequence advances (time available this tick) / step tokens, fractional progress carried over;
completions are timed exactly within the tick. This aggregates per-token events into one vector update
per path per tick; its error is that sequences joining or leaving within a tick change the batch only at
the next tick (≤ ``tick_s``), and that sequences are spread evenly over replicas (the router's ideal).

**Layers folded.** ``PerfModel.pass_latency_ms`` prices a pass through an operator's ALL layers. In a
real operator-disaggregated engine a batch alternates attention → FFN per layer; folding charges each
pool one pass instead of one per layer. Throughput is the same (busy time per batch is the sum over
layers either way). The activation transfers of the per-layer hand-offs are charged in full: ``2 ×
layers`` hops (+ embedding and lm_head) of ``tokens × activation_bytes_per_token`` at the placement's link.

**KV cache.** A sequence reserves prompt + output tokens of KV in the pool of its path that holds KV
(``decode/attention`` or ``decode/model``) when admitted — on the path with the most free KV that holds
it; admission waits while no path has room (FIFO), and a request that fits no replica is rejected.
Waiting longer than ``queue_timeout_s`` also rejects.

**Running cap.** A whole-model decode replica is an engine, and its batch is how many sequences it runs
at once, as vLLM's max_num_seqs or SGLang's max_running_requests is: of the path's resident sequences at
most R·b step in a round, the first admitted; the rest hold their KV and wait for a running one to
finish, the wait counted in the gap before their next token (as the wait for KV is). Before this cap
such a replica past its batch ran ⌈N/b⌉ full passes per round, each re-reading the model's weights:
one sequence over the batch doubled every sequence's step, residence doubled, and the path could settle
in that slow state (one trace in eight of mixtral-8x7b at 40 req/s ShareGPT ran at 24 ms per token
against 12 ms on the others); an engine's cap keeps its throughput at its most and queues the surplus.
An operator path's pools, the attention pool included, run their sequences as passes of their pass
size (micro-batches, as MegaScale-Infer's attention nodes do), split evenly.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import numpy as np

from opscale.sim.prefill_plane import Queue, reject_old

if TYPE_CHECKING:
    from opscale.policy.types import PoolKey
    from opscale.sim.engine import DataPlane, Path, Pool, Replica, TickStats


class DecodeState:
    """One entry per running sequence, and the queue of sequences awaiting admission."""

    def __init__(self) -> None:
        self.id = np.zeros(0, dtype=np.int64)
        self.path = np.zeros(0, dtype=np.int64)  # index into DataPlane.decode_paths
        self.left = np.zeros(0, dtype=np.int64)  # tokens still to generate
        self.prog = np.zeros(0)  # fractional progress toward the next token, in steps
        self.wait = np.zeros(0)  # gap accrued before the next token beyond the step (admission, stalls)
        self.kv = np.zeros(0)  # KV length now
        self.reserved = np.zeros(0)  # KV tokens reserved (prompt + output)
        self.queue: Queue = []
        self.last_step_s: float | None = None

    def add(self, cols: dict[str, np.ndarray]) -> None:
        for name, values in cols.items():
            setattr(self, name, np.concatenate([getattr(self, name), values]))

    def keep(self, mask: np.ndarray) -> None:
        for name in ("id", "path", "left", "prog", "wait", "kv", "reserved"):
            setattr(self, name, getattr(self, name)[mask])

    def reserved_on(self, path: int) -> float:
        return float(self.reserved[self.path == path].sum())

    def resident_on(self, path: int) -> bool:
        return bool((self.path == path).any())


def stepping(pool: Pool, t_end: float) -> list[Replica]:
    """The replicas that step a pool's passes: every ready one of a KV holder (draining ones hold
    sequences); of a stateless pool, the serving ones, or — when only draining ones are left — those,
    which stay while their path still runs sequences (``engine``)."""
    ready = [r for r in pool.replicas if r.ready_s <= t_end]
    if pool.holder:
        return ready
    return [r for r in ready if not r.draining] or ready


def running_cap(path: Path, t_end: float) -> int:
    """How many of a path's sequences step this round: of a whole-model path, ``batch`` per stepping
    replica (an engine's max_num_seqs); of an operator path, all of them (module docstring)."""
    pool = path.holder
    reps = stepping(pool, t_end) if pool is not None and pool.key.operator == "model" else []
    return len(reps) * pool.batch if pool is not None and reps else 1 << 62


def holder_replicas(path: Path, t_end: float) -> list[Replica]:
    pool = path.holder
    if pool is None:
        return []
    return [r for r in pool.replicas if not r.draining and r.ready_s <= t_end]


def admit(dp: DataPlane, t: float, t_end: float) -> np.ndarray:
    """Admit queued sequences while some path has KV room; returns their admission times."""
    st, req = dp.decode_state, dp.req
    q = st.queue
    reject_old(dp, q, t)
    if not q:
        return np.zeros(0)
    free: list[float] = []
    biggest = 0.0
    for k, path in enumerate(dp.decode_paths):
        serving = all(any(not r.draining and r.ready_s <= t_end for r in p.replicas) for p in path.pools)
        reps = holder_replicas(path, t_end) if serving else []
        caps = [dp.kv_capacity(path.holder, r.gpus) for r in reps] if path.holder else []
        free.append(sum(caps) - st.reserved_on(k) if caps else -math.inf)
        biggest = max(biggest, max(caps, default=0.0))
    if biggest <= 0.0:
        return np.zeros(0)
    ids, times, need, where = [], [], [], []
    while q and q[0][0] < t_end:
        ready, _, i = q[0]
        kv = float(req.input_tokens[i] + req.output_tokens[i])
        if kv > biggest:
            heapq.heappop(q)
            req.rejected[i] = True
            dp.n_rejected += 1
            continue
        k = max(range(len(free)), key=lambda j: free[j])
        if kv > free[k]:
            break
        heapq.heappop(q)
        ids.append(i)
        times.append(max(ready, t))
        need.append(kv)
        where.append(k)
        free[k] -= kv
    if not ids:
        return np.zeros(0)
    a = np.asarray(ids, dtype=np.int64)
    adm = np.asarray(times)
    st.add(
        {
            "id": a,
            "path": np.asarray(where, dtype=np.int64),
            "left": req.output_tokens[a] - 1,
            "prog": np.zeros(len(a)),
            # The first decode token's gap starts when the prefill emitted the first token.
            "wait": adm - req.prefill_done_s[a],
            "kv": req.input_tokens[a].astype(np.float64),
            "reserved": np.asarray(need),
        }
    )
    return adm


def pass_split(n: int, replicas: int, batch: int) -> tuple[int, int]:
    """(passes per round, sequences per pass) for ``n`` sequences spread evenly over ``replicas`` of
    pass size ``batch``: the fewest passes, split evenly (never a full pass and a nearly empty one)."""
    passes = max(1, math.ceil(n / (replicas * batch)))
    return passes, max(1, math.ceil(n / (replicas * passes)))


def step_time(
    dp: DataPlane, path: Path, n: int, length: float, t_end: float
) -> tuple[float, dict[PoolKey, float]]:
    """Seconds per token round for ``n`` running sequences on ``path``, and each pool's busy fraction."""
    lat, worst, hop_tokens = 0.0, 0.0, 0.0
    work: dict[PoolKey, float] = {}
    micro = max(p.micro for p in path.pools)
    for pool in path.pools:
        reps = stepping(pool, t_end)
        if not reps:
            return math.inf, {}
        R, b = len(reps), pool.batch
        passes, per = pass_split(n, R, b)
        mu = max(1, min(micro, per))
        m = math.ceil(per / mu)
        k = passes * mu
        s = dp.pass_s(pool, m, length, reps[0].gpus)
        lat += s
        worst = max(worst, k * s)
        work[pool.key] = k * s
        hop_tokens = max(hop_tokens, m)
    step = max(lat + dp.hop_s(path, hop_tokens), worst)
    return step, {key: w / step for key, w in work.items()}


def run(dp: DataPlane, t: float, t_end: float, out: TickStats) -> None:
    st = dp.decode_state
    n_before = len(st.id)
    adm = admit(dp, t, t_end)
    n = len(st.id)
    if n == 0:
        st.last_step_s = None
        return
    avail = np.full(n, t_end - t)
    if len(adm):
        avail[n_before:] = t_end - adm
    finished = np.zeros(n, dtype=bool)
    steps = []
    for k, path in enumerate(dp.decode_paths):
        on = np.flatnonzero(st.path == k)
        if len(on):
            step = _advance(dp, path, on, avail[on], t, t_end, out, finished)
            steps.append(step)
    st.last_step_s = max(steps) if steps else None
    if finished.any():
        st.keep(~finished)


def _advance(
    dp: DataPlane,
    path: Path,
    on: np.ndarray,
    avail: np.ndarray,
    t: float,
    t_end: float,
    out: TickStats,
    finished: np.ndarray,
) -> float:
    """One tick of the sequences ``on`` (indices into the state) of one path; marks the finished ones."""
    st, req = dp.decode_state, dp.req
    cap = running_cap(path, t_end)
    if len(on) > cap:  # the rest wait, first admitted first, for a running sequence to finish
        st.wait[on[cap:]] += avail[cap:]
        on, avail = on[:cap], avail[:cap]
    n = len(on)
    step, busy = step_time(dp, path, n, float(st.kv[on].mean()), t_end)
    if not math.isfinite(step):
        st.wait[on] += avail
        return step
    dt = t_end - t
    for pool in path.pools:
        reps = len(stepping(pool, t_end))
        pool.busy_s += busy.get(pool.key, 0.0) * reps * dt
        pool.batch_sum += pass_split(n, max(reps, 1), pool.batch)[1]
        pool.passes += 1
    x = st.prog[on] + avail / step
    ntok = np.floor(x).astype(np.int64)
    left = st.left[on]
    fin = ntok >= left
    made = np.minimum(ntok, left)
    ids = st.id[on]
    wait = st.wait[on]
    has = made > 0
    # TBT: each token made this tick took one step; a sequence's first token after a wait took
    # wait + step.
    first_gap = wait + step
    np.add.at(req.tbt_sum_s, ids, np.where(has, (made - 1) * step + first_gap, 0.0))
    second = has & (req.tbt_n[ids] == 0)
    req.ttst_s[ids[second]] = first_gap[second]
    req.tbt_n[ids] += made
    req.tbt_max_s[ids] = np.maximum(req.tbt_max_s[ids], np.where(has, np.maximum(first_gap, step), 0.0))
    tokens = int(made.sum())
    out.decode_tokens += tokens
    waited = has & (wait > 0)
    plain = tokens - int(waited.sum())
    if plain > 0:
        out.tbt.append((t_end, step * 1e3, plain))
    out.tbt.extend((t_end, g * 1e3, 1) for g in first_gap[waited].tolist())
    st.wait[on] = np.where(has, 0.0, wait)
    st.prog[on] = x - ntok
    st.left[on] = left - made
    st.kv[on] = st.kv[on] + made
    if fin.any():
        start = t_end - avail[fin]
        done = start + (left[fin] - (x[fin] - avail[fin] / step)) * step
        done = np.minimum(np.maximum(done, start), t_end)
        fids = ids[fin]
        req.finish_s[fids] = done
        dp.n_finished += len(fids)
        e2e = (done - req.arrival_s[fids]) * 1e3
        out.e2e.extend(zip(done.tolist(), e2e.tolist(), strict=True))
        finished[on[fin]] = True
    return step
