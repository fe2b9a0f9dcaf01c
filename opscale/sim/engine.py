"""The data plane on a virtual clock: requests, continuous batching per pool, operator passes, KV and
activation transfers, KV-cache limits, replica start-up and drain. Pure: no clock, no randomness (the
trace arrives already drawn), so a run is a function of its inputs.

Time advances in ticks of ``tick_s`` (200 ms by default). Inside a tick the two stages are modelled
differently, each as coarsely as its SLO allows:

**Prefill: pass-level events.** Each prefill pool is a FIFO queue served by its replicas. A free
replica takes up to ``batch`` prompts that are ready at its start time and runs one pass of the unit
(one operator for all layers, or the whole model) in ``pass_latency_ms(batch, mean prompt length,
GPUs)``; the prompts then queue at the next pool of the stage. Pass start and end times are exact
(not rounded to ticks): a replica runs as many passes inside a tick as fit.

**Decode: fluid continuous batching.** Running sequences of a deployment share the decode pools. With
N running sequences at mean KV length L, pool p (R_p ready replicas, batch limit b_p) runs
k_p = ⌈N / (R_p·b_p)⌉ passes of n_p = min(b_p, ⌈N / R_p⌉) sequences per token round, so one token of
every sequence takes

    step = max( Σ_p s_p(n_p, L) + hops(n_p),   max_p k_p · s_p(n_p, L) )

— latency-bound (a token must traverse every pool in turn) or throughput-bound (the slowest pool's
passes), whichever is larger. Each sequence advances (time available this tick) / step tokens,
fractional progress carried over; completions are timed exactly within the tick. This aggregates
per-token events into one vector update per tick; its error is that sequences joining or leaving
within a tick change the batch only at the next tick (≤ ``tick_s``), and that sequences are spread
evenly over replicas (the router's ideal).

**Layers folded.** ``PerfModel.pass_latency_ms`` prices a pass through an operator's ALL layers. In a
real operator-disaggregated engine a batch alternates attention → FFN per layer; folding charges each
pool one queue wait per pass instead of one per layer. Throughput is the same (busy time per batch is
the sum over layers either way); latency under contention is underestimated by up to (layers − 1)
extra waits, which is zero when pools are not saturated (the planner keeps ρ < 1). The activation
transfers of the per-layer hand-offs are charged in full: ``2 × layers`` hops (+ embedding and
lm_head) of ``tokens × activation_bytes_per_token`` at the placement's link (``locality``).

**KV cache.** A sequence reserves (prompt + output) × KV bytes per token in the decode pool that holds
KV (``decode/attention`` or ``decode/model``) when admitted; admission waits while KV bytes (Σ per-replica
capacity) are short, and a request that cannot fit one replica is rejected. The plan's batch size is the
batch of one pass, not a cap on resident sequences: a replica holding more than ``batch`` sequences runs
them as ⌈N/batch⌉ micro-batches per token round (the ``k_p`` above), the same rule for whole-model and
operator replicas.
Waiting longer than ``queue_timeout_s`` in either stage also rejects. The prompt's KV moves from
prefill to decode over ``kv_link_bytes_s``.

**Replicas.** A new replica is ready after weights / (GPUs × load bandwidth) + overhead. Scale-in
drains: a prefill replica stops after its current pass; decode replicas holding KV stop once the
running sequences fit the remaining replicas (fluid migration); stateless decode pools stop at once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from opscale.model import PerfModel
from opscale.model.energy import OperatorLoad, gpu_watts
from opscale.model.perf import USABLE_MEMORY_FRACTION
from opscale.policy.planner_core import Unit, min_gpus
from opscale.policy.types import PoolKey, PoolPlan

HOLDERS = ("attention", "model")  # the decode pools that keep the KV cache


@dataclass(frozen=True, slots=True)
class SimConfig:
    tick_s: float = 0.2  # 0.05 gives the same GPU-hours and attainment, p99 TBT within 1% (BENCHMARKS.md)
    kv_link_bytes_s: float = 50e9  # prefill -> decode KV transfer (400 Gb/s RDMA)
    locality: str = "node"  # operator hand-offs: "gpu" (shared memory), "node" (NVLink), "network"
    network_bytes_s: float = 50e9
    hop_latency_s: float = 10e-6  # per activation hand-off
    load_bytes_s_per_gpu: Mapping[str, float] = field(default_factory=lambda: {"H100": 5e9})
    default_load_bytes_s: float = 5e9
    startup_overhead_s: Mapping[str, float] = field(default_factory=lambda: {"H100": 3.0})
    default_startup_overhead_s: float = 3.0
    queue_timeout_s: float = 120.0
    length_bucket: float = 2 ** (1 / 16)  # pass latencies priced at lengths rounded to this ratio
    default_batch: int = 64

    def startup_s(self, gpu: str, weights_bytes: int, gpus: int) -> float:
        bw = self.load_bytes_s_per_gpu.get(gpu, self.default_load_bytes_s)
        return weights_bytes / (bw * gpus) + self.startup_overhead_s.get(gpu, self.default_startup_overhead_s)


@dataclass(slots=True)
class Replica:
    rid: int
    gpus: int
    ready_s: float
    draining: bool = False
    free_s: float = 0.0  # prefill: when the current pass ends


@dataclass(slots=True)
class Pool:
    key: PoolKey
    unit: Unit
    batch: int
    gpus: int
    weights_bytes: int
    busy_watts: float
    replicas: list[Replica] = field(default_factory=list)
    queue: list[tuple[float, int, int]] = field(default_factory=list)  # (ready_s, seq, request)
    busy_s: float = 0.0  # replica-seconds busy since the last sample
    batch_sum: float = 0.0
    passes: int = 0

    @property
    def holder(self) -> bool:
        return self.key.stage == "decode" and self.key.operator in HOLDERS


@dataclass(slots=True)
class Requests:
    """Per-request outputs; NaN until known."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray = field(init=False)
    prefill_done_s: np.ndarray = field(init=False)
    finish_s: np.ndarray = field(init=False)
    tbt_sum_s: np.ndarray = field(init=False)
    tbt_max_s: np.ndarray = field(init=False)
    tbt_n: np.ndarray = field(init=False)
    rejected: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        self.ttft_s = np.full(n, np.nan)
        self.prefill_done_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.tbt_sum_s = np.zeros(n)
        self.tbt_max_s = np.zeros(n)
        self.tbt_n = np.zeros(n, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)


@dataclass(slots=True)
class TickStats:
    """What the tick produced, for the signal feed (per-request events carry their times)."""

    ttft: list[tuple[float, float]] = field(default_factory=list)  # (at_s, ms)
    tbt: list[tuple[float, float, int]] = field(default_factory=list)  # (at_s, ms, count)
    e2e: list[tuple[float, float]] = field(default_factory=list)
    decode_tokens: float = 0.0
    prefill_tokens: float = 0.0


class DataPlane:
    def __init__(
        self, perf: PerfModel, units: Sequence[Unit], requests: Requests, config: SimConfig | None = None
    ) -> None:
        self.perf = perf
        self.cfg = config or SimConfig()
        self.req = requests
        self.gpu = perf.gpu
        self.pools: dict[PoolKey, Pool] = {}
        for u in units:
            w = sum(perf.weights_bytes(op) for op in u.ops)
            self.pools[u.pool] = Pool(
                u.pool, u, self.cfg.default_batch, 1, w, self._unit_busy_watts(u, self.cfg.default_batch)
            )
        self.prefill = [p for p in self.pools.values() if p.key.stage == "prefill"]
        self.decode = [p for p in self.pools.values() if p.key.stage == "decode"]
        self._next_rid = 0
        self._seq = 0
        self._cache: dict[tuple[PoolKey, int, int, int], float] = {}
        self._kv_cache: dict[tuple[PoolKey, int, int], float] = {}
        self._power_cache: dict[tuple[PoolKey, int], float] = {}
        shape = perf.shape
        self.kv_bpt = perf.kv_bytes_per_token()
        self.act_bpt = shape.activation_bytes_per_token
        operator_level = any(p.key.operator not in HOLDERS for p in self.pools.values())
        self.hops = 2 * shape.layers + 2 if operator_level else 0
        if self.cfg.locality == "gpu":
            self.hop_bytes_s = math.inf
        elif self.cfg.locality == "node":
            self.hop_bytes_s = self.gpu.link_bytes_s / 2
        else:
            self.hop_bytes_s = self.cfg.network_bytes_s
        # decode state, one entry per running sequence
        self.d_id = np.zeros(0, dtype=np.int64)
        self.d_left = np.zeros(0, dtype=np.int64)  # tokens still to generate
        self.d_prog = np.zeros(0)  # fractional progress toward the next token, in steps
        self.d_wait = np.zeros(0)  # gap accrued before the next token beyond the step (admission, stalls)
        self.d_kv = np.zeros(0)  # KV length now
        self.d_reserved = np.zeros(0)  # KV bytes reserved
        self.d_queue: list[tuple[float, int, int]] = []  # (ready_s, seq, request) awaiting admission
        self.last_step_s: float | None = None
        self.n_enqueued = self.n_finished = self.n_rejected = 0
        self.same_node: dict[str, float] = {}  # set from placement; empty: ``locality`` decides

    @property
    def in_system(self) -> int:
        """Requests admitted to the data plane and neither finished nor rejected (Little's L)."""
        return self.n_enqueued - self.n_finished - self.n_rejected

    # --- pricing ------------------------------------------------------------------------------------

    def _bucket(self, length: float) -> int:
        r = self.cfg.length_bucket
        return max(1, round(r ** round(math.log(max(length, 1.0), r))))

    def pass_s(self, pool: Pool, batch: int, length: float, gpus: int) -> float:
        lb = self._bucket(length)
        key = (pool.key, batch, lb, gpus)
        s = self._cache.get(key)
        if s is None:
            stage = pool.unit.stage
            s = sum(self.perf.pass_latency_ms(stage, op, batch, lb, gpus) for op in pool.unit.ops) / 1e3
            self._cache[key] = s
        return s

    def refresh_power(self) -> None:
        """Price each pool's busy power at the mean batch its passes ran with since the last sample (a
        decode replica stepping 40 sequences draws less than at its planned batch of 256)."""
        for pool in self.pools.values():
            if pool.passes:
                b = max(1, round(pool.batch_sum / pool.passes))
                key = (pool.key, b)
                w = self._power_cache.get(key)
                if w is None:
                    w = self._power_cache[key] = self._unit_busy_watts(pool.unit, b)
                pool.busy_watts = w

    def _unit_busy_watts(self, u: Unit, batch: int, length: int = 1024) -> float:
        times = [self.perf.pass_latency_ms(u.stage, op, batch, length, 1) for op in u.ops]
        watts = [self.perf.busy_watts(u.stage, op, batch, length) for op in u.ops]
        return sum(t * w for t, w in zip(times, watts, strict=True)) / max(sum(times), 1e-12)

    def hop_s(self, tokens: float, stage: str = "decode") -> float:
        """Activation hand-offs of one pass through the stage's operator pools. With placement wired in,
        ``same_node[stage]`` is the share of attention↔FFN replica pairs on one node (NVLink); the rest
        cross the network."""
        if not self.hops:
            return 0.0
        f = self.same_node.get(stage)
        if f is None:
            per_byte = 1.0 / self.hop_bytes_s
        else:
            per_byte = f / (self.gpu.link_bytes_s / 2) + (1.0 - f) / self.cfg.network_bytes_s
        return self.hops * (self.cfg.hop_latency_s + tokens * self.act_bpt * per_byte)

    def kv_capacity(self, pool: Pool, gpus: int) -> float:
        """KV bytes one holder replica of ``gpus`` GPUs can hold beside weights and activations."""
        key = (pool.key, pool.batch, gpus)
        cap = self._kv_cache.get(key)
        if cap is None:
            cap = self._kv_cache[key] = self._kv_capacity(pool, gpus)
        return cap

    def _kv_capacity(self, pool: Pool, gpus: int) -> float:
        ctx = 2048
        act = 0
        for op in pool.unit.ops:
            need = self.perf.replica_memory_bytes("decode", op, pool.batch, ctx)
            kv = pool.batch * ctx * self.kv_bpt if op in HOLDERS or op == "attention" else 0
            act = max(act, need - self.perf.weights_bytes(op) - kv)
        return max(0.0, gpus * self.gpu.memory_bytes * USABLE_MEMORY_FRACTION - pool.weights_bytes - act)

    # --- replicas -----------------------------------------------------------------------------------

    def alive(self) -> list[tuple[Pool, Replica]]:
        return [(p, r) for p in self.pools.values() for r in p.replicas]

    def gpus_allocated(self) -> int:
        """GPUs held: every replica (starting, serving or draining) holds its GPUs alone. Placement may
        pack operator replicas onto shared GPUs; until it is wired in, none share (see accounting)."""
        return sum(r.gpus for p in self.pools.values() for r in p.replicas)

    def min_gpus(self, pool: Pool, batch: int) -> int:
        return min_gpus(self.perf, pool.unit, batch, 2048 if pool.key.stage == "decode" else 1)

    def apply(
        self,
        desired: Mapping[PoolKey, PoolPlan],
        now_s: float,
        *,
        ready: bool = False,
        draining: Mapping[PoolKey, int] | None = None,
    ) -> int:
        """Reconcile replicas toward ``desired``; returns the number of replicas started + drained."""
        actions = 0
        for key, plan in desired.items():
            pool = self.pools.get(key)
            if pool is None:
                continue
            pool.batch = plan.batch_size or pool.batch
            pool.gpus = max(plan.gpus_per_replica, self.min_gpus(pool, pool.batch))
            pool.busy_watts = self._unit_busy_watts(pool.unit, pool.batch)
            want = max(0, plan.replicas - (draining or {}).get(key, 0))
            serving = [r for r in pool.replicas if not r.draining]
            for _ in range(want - len(serving)):
                start = 0.0 if ready else self.cfg.startup_s(self.gpu.key, pool.weights_bytes, pool.gpus)
                pool.replicas.append(Replica(self._next_rid, pool.gpus, now_s + start, free_s=now_s + start))
                self._next_rid += 1
                actions += 1
            surplus = len(serving) - want
            if surplus > 0:
                # Cancel replicas still starting first (newest first), then drain the newest serving.
                order = sorted(serving, key=lambda r: (r.ready_s <= now_s, -r.ready_s))
                for r in order[:surplus]:
                    r.draining = True
                    actions += 1
        self._finish_drains(now_s)
        return actions

    def _finish_drains(self, now_s: float) -> None:
        for pool in self.pools.values():
            if not any(r.draining for r in pool.replicas):
                continue
            if pool.key.stage == "prefill":
                pool.replicas = [
                    r for r in pool.replicas if not (r.draining and (r.free_s <= now_s or r.ready_s > now_s))
                ]
            elif not pool.holder:
                pool.replicas = [r for r in pool.replicas if not r.draining]
            else:
                keep = [r for r in pool.replicas if not r.draining]
                kv = sum(self.kv_capacity(pool, r.gpus) for r in keep if r.ready_s <= now_s)
                used = float(self.d_reserved.sum())
                drained = [r for r in pool.replicas if r.draining]
                for r in sorted(drained, key=lambda r: r.ready_s > now_s, reverse=True):
                    if r.ready_s > now_s or used <= kv:
                        pool.replicas.remove(r)

    # --- the tick -----------------------------------------------------------------------------------

    def enqueue(self, ids: np.ndarray) -> None:
        first = self.prefill[0]
        self.n_enqueued += len(ids)
        for i in ids.tolist():
            self._seq += 1
            heapq.heappush(first.queue, (float(self.req.arrival_s[i]), self._seq, i))

    def tick(self, t: float, t_end: float, out: TickStats) -> None:
        self._prefill(t, t_end, out)
        self._decode(t, t_end, out)
        self._finish_drains(t_end)

    def _reject_old(self, queue: list[tuple[float, int, int]], t: float) -> None:
        limit = self.cfg.queue_timeout_s
        while queue and queue[0][0] + limit < t:
            _, _, i = heapq.heappop(queue)
            self.req.rejected[i] = True
            self.n_rejected += 1

    def _prefill(self, t: float, t_end: float, out: TickStats) -> None:
        req = self.req
        last = len(self.prefill) - 1
        for idx, pool in enumerate(self.prefill):
            q = pool.queue
            self._reject_old(q, t)
            reps = [r for r in pool.replicas if not r.draining and r.ready_s < t_end]
            if not reps or not q:
                continue
            nxt = self.prefill[idx + 1] if idx < last else None
            while q and q[0][0] < t_end:
                r = min(reps, key=lambda r: max(r.free_s, r.ready_s))
                start = max(r.free_s, r.ready_s, q[0][0])
                if start >= t_end:
                    break
                batch: list[int] = []
                while q and q[0][0] <= start and len(batch) < pool.batch:
                    batch.append(heapq.heappop(q)[2])
                lens = req.input_tokens[batch]
                tokens = float(lens.sum())
                s = self.pass_s(pool, len(batch), tokens / len(batch), r.gpus)
                r.free_s = start + s
                pool.busy_s += s
                pool.batch_sum += len(batch)
                pool.passes += 1
                done = start + s
                if nxt is not None:
                    for i in batch:
                        self._seq += 1
                        heapq.heappush(nxt.queue, (done, self._seq, i))
                    continue
                done += self.hop_s(tokens, "prefill")
                out.prefill_tokens += tokens
                for i, n_in in zip(batch, lens.tolist(), strict=True):
                    req.ttft_s[i] = done - req.arrival_s[i]
                    req.prefill_done_s[i] = done
                    out.ttft.append((done, (done - req.arrival_s[i]) * 1e3))
                    if req.output_tokens[i] <= 1:
                        req.finish_s[i] = done
                        self.n_finished += 1
                        out.e2e.append((done, (done - req.arrival_s[i]) * 1e3))
                        continue
                    self._seq += 1
                    heapq.heappush(
                        self.d_queue, (done + n_in * self.kv_bpt / self.cfg.kv_link_bytes_s, self._seq, i)
                    )

    def _holders(self, t_end: float) -> tuple[Pool | None, list[Replica]]:
        holder = next((p for p in self.decode if p.holder), None)
        if holder is None:
            return None, []
        return holder, [r for r in holder.replicas if not r.draining and r.ready_s <= t_end]

    def _admit(self, t: float, t_end: float) -> np.ndarray:
        """Admit queued sequences while KV memory allows; returns their admission times."""
        req = self.req
        q = self.d_queue
        self._reject_old(q, t)
        holder, reps = self._holders(t_end)
        if holder is None or not reps or not q:
            return np.zeros(0)
        caps = [self.kv_capacity(holder, r.gpus) for r in reps]
        free_kv = sum(caps) - float(self.d_reserved.sum())
        biggest = max(caps)
        ids, times, need = [], [], []
        while q and q[0][0] < t_end:
            ready, _, i = q[0]
            kv = float(req.input_tokens[i] + req.output_tokens[i]) * self.kv_bpt
            if kv > biggest:
                heapq.heappop(q)
                req.rejected[i] = True
                self.n_rejected += 1
                continue
            if kv > free_kv:
                break
            heapq.heappop(q)
            ids.append(i)
            times.append(max(ready, t))
            need.append(kv)
            free_kv -= kv
        if not ids:
            return np.zeros(0)
        a = np.asarray(ids, dtype=np.int64)
        adm = np.asarray(times)
        self.d_id = np.concatenate([self.d_id, a])
        self.d_left = np.concatenate([self.d_left, req.output_tokens[a] - 1])
        self.d_prog = np.concatenate([self.d_prog, np.zeros(len(a))])
        # The first decode token's gap starts when the prefill emitted the first token.
        self.d_wait = np.concatenate([self.d_wait, adm - req.prefill_done_s[a]])
        self.d_kv = np.concatenate([self.d_kv, req.input_tokens[a].astype(np.float64)])
        self.d_reserved = np.concatenate([self.d_reserved, np.asarray(need)])
        return adm

    def step_time(self, n: int, length: float, t_end: float) -> tuple[float, dict[PoolKey, float]]:
        """Seconds per token round for ``n`` running sequences, and each pool's busy fraction."""
        lat, worst, hop_tokens = 0.0, 0.0, 0.0
        work: dict[PoolKey, float] = {}
        for pool in self.decode:
            reps = [r for r in pool.replicas if r.ready_s <= t_end and (pool.holder or not r.draining)]
            if not reps:
                return math.inf, {}
            R, b = len(reps), pool.batch
            per = min(b, math.ceil(n / R))
            k = math.ceil(n / (R * b))
            s = self.pass_s(pool, per, length, reps[0].gpus)
            lat += s
            worst = max(worst, k * s)
            work[pool.key] = k * s
            hop_tokens = max(hop_tokens, per)
        step = max(lat + self.hop_s(hop_tokens), worst)
        return step, {key: w / step for key, w in work.items()}

    def _decode(self, t: float, t_end: float, out: TickStats) -> None:
        n_before = len(self.d_id)
        adm = self._admit(t, t_end)
        n = len(self.d_id)
        if n == 0:
            self.last_step_s = None
            return
        avail = np.full(n, t_end - t)
        if len(adm):
            avail[n_before:] = t_end - adm
        step, busy = self.step_time(n, float(self.d_kv.mean()), t_end)
        self.last_step_s = step
        if not math.isfinite(step):
            self.d_wait += avail
            return
        dt = t_end - t
        for pool in self.decode:
            frac = busy.get(pool.key, 0.0)
            reps = sum(1 for r in pool.replicas if r.ready_s <= t_end and (pool.holder or not r.draining))
            pool.busy_s += frac * reps * dt
            pool.batch_sum += min(pool.batch, math.ceil(n / max(reps, 1)))
            pool.passes += 1
        x = self.d_prog + avail / step
        ntok = np.floor(x).astype(np.int64)
        left = self.d_left
        fin = ntok >= left
        made = np.minimum(ntok, left)
        req = self.req
        ids = self.d_id
        has = made > 0
        # TBT: each token made this tick took one step; a sequence's first token after a wait took
        # wait + step.
        first_gap = self.d_wait + step
        gaps_sum = np.where(has, (made - 1) * step + first_gap, 0.0)
        np.add.at(req.tbt_sum_s, ids, gaps_sum)
        req.tbt_n[ids] += made
        gmax = np.where(has, np.maximum(first_gap, step), 0.0)
        req.tbt_max_s[ids] = np.maximum(req.tbt_max_s[ids], gmax)
        tokens = int(made.sum())
        out.decode_tokens += tokens
        plain = tokens - int(has.sum())
        stamp = t_end
        if plain > 0:
            out.tbt.append((stamp, step * 1e3, plain))
        waited = has & (self.d_wait > 0)
        out.tbt.extend((stamp, g * 1e3, 1) for g in first_gap[waited].tolist())
        fresh = has & ~(self.d_wait > 0)
        nf = int(fresh.sum())
        if nf:
            out.tbt.append((stamp, step * 1e3, nf))
        self.d_wait = np.where(has, 0.0, self.d_wait)
        self.d_prog = x - ntok
        self.d_left = left - made
        self.d_kv = self.d_kv + made
        if fin.any():
            start = t_end - avail[fin]
            done = start + (left[fin] - (x[fin] - avail[fin] / step)) * step
            done = np.minimum(np.maximum(done, start), t_end)
            fids = ids[fin]
            req.finish_s[fids] = done
            self.n_finished += len(fids)
            e2e = (done - req.arrival_s[fids]) * 1e3
            out.e2e.extend(zip(done.tolist(), e2e.tolist(), strict=True))
            keep = ~fin
            self.d_id, self.d_left, self.d_prog = ids[keep], self.d_left[keep], self.d_prog[keep]
            self.d_wait, self.d_kv = self.d_wait[keep], self.d_kv[keep]
            self.d_reserved = self.d_reserved[keep]

    # --- observation --------------------------------------------------------------------------------

    def queue_lengths(self) -> dict[PoolKey, int]:
        out = {p.key: len(p.queue) for p in self.prefill}
        holder = next((p for p in self.decode if p.holder), None)
        if holder is not None:
            out[holder.key] = len(self.d_queue)
        return out

    def kv_use(self, now_s: float) -> float | None:
        holder, reps = self._holders(now_s)
        if holder is None or not reps:
            return None
        cap = sum(self.kv_capacity(holder, r.gpus) for r in holder.replicas if r.ready_s <= now_s)
        return min(1.0, float(self.d_reserved.sum()) / cap) if cap > 0 else None

    def watts(self, busy: Mapping[PoolKey, float], now_s: float) -> float:
        total = 0.0
        for pool in self.pools.values():
            frac = min(1.0, max(0.0, busy.get(pool.key, 0.0)))
            for r in pool.replicas:
                load = () if r.ready_s > now_s else (OperatorLoad(pool.busy_watts, frac),)
                total += r.gpus * gpu_watts(self.gpu, load)
        return total

    def unfinished(self) -> np.ndarray:
        """Requests neither finished nor rejected (still queued or running)."""
        out: np.ndarray = np.isnan(self.req.finish_s) & ~self.req.rejected
        return out
