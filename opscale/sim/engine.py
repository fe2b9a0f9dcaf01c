"""The data plane on a virtual clock: requests, continuous batching per pool, operator passes, KV and
activation transfers, KV-cache limits, replica start-up and drain. Pure: no clock, no randomness (the
trace arrives already drawn), so a run is a function of its inputs.

Time advances in ticks of ``tick_s`` (200 ms by default). Inside a tick the two stages are modelled each
as coarsely as its SLO allows: prefill pass by pass (``prefill_plane``), decode as fluid continuous
batching (``decode_plane``).

**Paths.** A stage is served by one or two *paths*: whole-model replicas (``…/model``), and the chain of
operator pools (embedding → attention → FFN/experts → lm_head). A deployment runs one form per stage and
both while it moves from one to the other (``opscale.policy.hybrid``): prompts are routed to a path as
they arrive, sequences to a decode path as they are admitted.

**Replicas.** A new replica is ready after weights / (GPUs × load bandwidth) + overhead. Scale-in
drains: a prefill replica stops after its current pass; decode replicas holding KV stop once the
running sequences of their path fit the remaining replicas (fluid migration); stateless decode pools stop
at once. When a stage leaves a form, the last replicas of each of its pools finish their path's work:
a prefill pool's serve the prompts still queued on the path, a stateless decode pool's step until the
path's sequences are done.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from opscale.model import PerfModel
from opscale.model.energy import OperatorLoad, gpu_watts
from opscale.model.fabric import HOP_LATENCY_S, KV_LINK_BYTES_S, NETWORK_BYTES_S
from opscale.model.memory import replica_memory
from opscale.model.startup import LOAD_BYTES_S_PER_GPU, OVERHEAD_S, startup_s
from opscale.policy.planner_core import Unit
from opscale.policy.types import PoolKey, PoolPlan
from opscale.sim import decode_plane, prefill_plane
from opscale.sim.decode_plane import DecodeState

HOLDERS = ("attention", "model")  # the decode pools that keep the KV cache


@dataclass(frozen=True, slots=True)
class SimConfig:
    tick_s: float = 0.2  # 0.05 gives the same GPU-hours and attainment, p99 TBT within 1% (BENCHMARKS.md)
    kv_link_bytes_s: float = KV_LINK_BYTES_S  # prefill -> decode KV transfer (opscale.model.fabric)
    locality: str = "node"  # operator hand-offs: "gpu" (shared memory), "node" (NVLink), "network"
    network_bytes_s: float = NETWORK_BYTES_S
    hop_latency_s: float = HOP_LATENCY_S  # per activation hand-off
    load_bytes_s_per_gpu: Mapping[str, float] = field(default_factory=lambda: {"H100": LOAD_BYTES_S_PER_GPU})
    startup_overhead_s: Mapping[str, float] = field(default_factory=lambda: {"H100": OVERHEAD_S})
    queue_timeout_s: float = 120.0
    length_bucket: float = 2 ** (1 / 16)  # pass latencies priced at lengths rounded to this ratio
    default_batch: int = 64

    def startup_s(self, gpu: str, weights_bytes: int, gpus: float) -> float:
        return startup_s(gpu, weights_bytes, gpus, self.load_bytes_s_per_gpu, self.startup_overhead_s)


@dataclass(slots=True)
class Replica:
    rid: int
    gpus: float  # below 1: a share of one GPU (opscale.model.sharing)
    ready_s: float
    draining: bool = False
    free_s: float = 0.0  # prefill: when the current pass ends


@dataclass(slots=True)
class Pool:
    key: PoolKey
    unit: Unit
    batch: int
    gpus: float
    weights_bytes: int
    busy_watts: float
    micro: int = 1  # decode: micro-batches per pass (ping-pong with the path's other pools)
    replicas: list[Replica] = field(default_factory=list)
    queue: list[tuple[float, int, int]] = field(default_factory=list)  # (ready_s, seq, request)
    busy_s: float = 0.0  # replica-seconds busy since the last sample
    batch_sum: float = 0.0
    passes: int = 0

    @property
    def holder(self) -> bool:
        return self.key.stage == "decode" and self.key.operator in HOLDERS


@dataclass(slots=True)
class Path:
    """One way through a stage: a whole-model pool, or the chain of its operator pools."""

    stage: str
    pools: list[Pool]
    hops: int  # activation hand-offs per pass (2 per layer + 2 for operator chains, 0 for whole models)

    @property
    def holder(self) -> Pool | None:
        """The decode pool keeping the path's KV cache."""
        return next((p for p in self.pools if p.holder), None)


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
    ttst_s: np.ndarray = field(init=False)  # first decode gap: time from the first to the second token
    kv_start_s: np.ndarray = field(init=False)  # when its KV began to stream to decode (attention pass)
    rejected: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        self.ttft_s = np.full(n, np.nan)
        self.prefill_done_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.tbt_sum_s = np.zeros(n)
        self.tbt_max_s = np.zeros(n)
        self.tbt_n = np.zeros(n, dtype=np.int64)
        self.ttst_s = np.full(n, np.nan)
        self.kv_start_s = np.full(n, np.nan)
        self.rejected = np.zeros(n, dtype=bool)


@dataclass(slots=True)
class TickStats:
    """What the tick produced, for the signal feed (per-request events carry their times)."""

    ttft: list[tuple[float, float]] = field(default_factory=list)  # (at_s, ms)
    tbt: list[tuple[float, float, int]] = field(default_factory=list)  # (at_s, ms, count)
    e2e: list[tuple[float, float]] = field(default_factory=list)
    decode_tokens: float = 0.0
    prefill_tokens: float = 0.0


ORDER = {"embedding": 0, "attention": 1, "ffn": 2, "experts": 2, "lm_head": 3}


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
        hops = 2 * perf.shape.layers + 2
        self.prefill_paths = _paths("prefill", self.prefill, hops)
        self.decode_paths = _paths("decode", self.decode, hops)
        self.seq = 0
        self._next_rid = 0
        self._cache: dict[tuple[PoolKey, int, int, float, int], float] = {}
        self._kv_cache: dict[tuple[PoolKey, int, float], float] = {}
        self._power_cache: dict[tuple[PoolKey, int], float] = {}
        self.kv_bpt = perf.kv_bytes_per_token()
        self.act_bpt = perf.shape.activation_bytes_per_token
        if self.cfg.locality == "gpu":
            self.hop_bytes_s = math.inf
        elif self.cfg.locality == "node":
            self.hop_bytes_s = self.gpu.link_bytes_s / 2
        else:
            self.hop_bytes_s = self.cfg.network_bytes_s
        self.decode_state = DecodeState()
        self.n_enqueued = self.n_finished = self.n_rejected = 0
        self.same_node: dict[str, float] = {}  # set from placement; empty: ``locality`` decides

    @property
    def in_system(self) -> int:
        """Requests admitted to the data plane and neither finished nor rejected (Little's L)."""
        return self.n_enqueued - self.n_finished - self.n_rejected

    @property
    def running(self) -> int:
        """Sequences decoding now."""
        return len(self.decode_state.id)

    @property
    def last_step_s(self) -> float | None:
        return self.decode_state.last_step_s

    # --- pricing ------------------------------------------------------------------------------------

    def _bucket(self, length: float) -> int:
        r = self.cfg.length_bucket
        return max(1, round(r ** round(math.log(max(length, 1.0), r))))

    def pass_s(
        self, pool: Pool, batch: int, length: float, gpus: float, core_length: float | None = None
    ) -> float:
        """One pass of ``batch`` sequences at mean ``length``; ``core_length`` (prefill): the root mean
        square of the prompts, at which the causal attention core is priced (its work is Σ L²). A replica
        on a share of one GPU runs at the planner's price for it (``opscale.model.sharing``)."""
        lb = self._bucket(length)
        cb = lb if core_length is None else self._bucket(core_length)
        key = (pool.key, batch, lb, gpus, cb)
        s = self._cache.get(key)
        if s is None:
            stage = pool.unit.stage
            s = sum(self.perf.pass_latency_ms(stage, op, batch, lb, gpus, cb) for op in pool.unit.ops) / 1e3
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

    def hop_s(self, path: Path, tokens: float) -> float:
        """Activation hand-offs of one pass through a path's operator pools. With placement wired in,
        ``same_node[stage]`` is the share of attention↔FFN replica pairs on one node (NVLink); the rest
        cross the network."""
        if not path.hops:
            return 0.0
        f = self.same_node.get(path.stage)
        if f is None:
            per_byte = 1.0 / self.hop_bytes_s
        else:
            per_byte = f / (self.gpu.link_bytes_s / 2) + (1.0 - f) / self.cfg.network_bytes_s
        return path.hops * (self.cfg.hop_latency_s + tokens * self.act_bpt * per_byte)

    def kv_capacity(self, pool: Pool, gpus: float) -> float:
        """Tokens of context one attention replica of ``gpus`` GPUs holds: its KV pool under the one
        memory model (``opscale.model.memory``), what the planner sized it by."""
        key = (pool.key, pool.batch, gpus)
        cap = self._kv_cache.get(key)
        if cap is None:
            mem = replica_memory(self.perf.shape, self.gpu, pool.key.stage, pool.unit.ops, pool.batch, gpus)
            cap = self._kv_cache[key] = mem.kv_tokens()
        return cap

    # --- replicas -----------------------------------------------------------------------------------

    def alive(self) -> list[tuple[Pool, Replica]]:
        return [(p, r) for p in self.pools.values() for r in p.replicas]

    def gpus_allocated(self) -> int:
        """GPUs held if every whole-GPU replica (starting, serving or draining) holds its GPUs alone and
        shared replicas fill shared GPUs (⌈Σ shares⌉); placement packs them for real (``accounting``)."""
        reps = [r for p in self.pools.values() for r in p.replicas]
        whole = sum(round(r.gpus) for r in reps if r.gpus >= 1)
        return whole + math.ceil(sum(r.gpus for r in reps if r.gpus < 1) - 1e-9)

    def replica_gpus(self, pool: Pool, batch: int, planned: float) -> float:
        """The planned GPUs per replica if its replica fits the memory model there, else the fewest GPUs
        (a power of two) that fit."""
        shape, stage, ops = self.perf.shape, pool.key.stage, pool.unit.ops
        if replica_memory(shape, self.gpu, stage, ops, batch, planned).fits:
            return planned
        g = max(1, int(planned))
        while g < 64 and not replica_memory(shape, self.gpu, stage, ops, batch, g).fits:
            g *= 2
        return g

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
            pool.micro = plan.micro_batches
            pool.gpus = self.replica_gpus(pool, pool.batch, plan.gpus)
            pool.busy_watts = self._unit_busy_watts(pool.unit, pool.batch)
            want = max(0, plan.replicas - (draining or {}).get(key, 0))
            serving = [r for r in pool.replicas if not r.draining and r.gpus == pool.gpus]
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
            actions += self._roll(pool, want, now_s)
        self._finish_drains(now_s)
        return actions

    def _roll(self, pool: Pool, want: int, now_s: float) -> int:
        """Replicas of an old shape (GPUs per replica the plan changed) keep serving until replicas of the
        new shape are ready to take their place, then drain (make before break)."""
        old = [r for r in pool.replicas if not r.draining and r.gpus != pool.gpus]
        if not old:
            return 0
        ready = sum(1 for r in pool.replicas if not r.draining and r.gpus == pool.gpus and r.ready_s <= now_s)
        keep = max(0, min(len(old), want - ready))
        for r in sorted(old, key=lambda r: r.ready_s)[keep:]:
            r.draining = True
        return len(old) - keep

    def _finish_drains(self, now_s: float) -> None:
        for pool in self.pools.values():
            if not any(r.draining for r in pool.replicas):
                continue
            last = all(r.draining for r in pool.replicas)  # nothing left in the pool to take over
            if pool.key.stage == "prefill":
                # A drained replica stops after its pass, unless it is the last of its pool while prompts
                # still queue on its path (a stage leaving a form): it serves them first, as an engine
                # finishes its waiting requests on a graceful shutdown.
                queued = last and any(
                    q.queue for path in self.prefill_paths if pool in path.pools for q in path.pools
                )
                pool.replicas = [
                    r
                    for r in pool.replicas
                    if not (r.draining and (r.ready_s > now_s or (r.free_s <= now_s and not queued)))
                ]
            elif not pool.holder:
                # Stateless: drained at once, unless they are the last of their path while its holder
                # still runs sequences (a stage moving to the other form): those need every pool of the
                # path to finish, so the draining replicas serve until the path is empty.
                k = next(i for i, p in enumerate(self.decode_paths) if pool in p.pools)
                if not (last and self.decode_state.resident_on(k)):
                    pool.replicas = [r for r in pool.replicas if not r.draining]
                else:
                    pool.replicas = [r for r in pool.replicas if not (r.draining and r.ready_s > now_s)]
            else:
                k = next(i for i, p in enumerate(self.decode_paths) if p.holder is pool)
                keep = [r for r in pool.replicas if not r.draining]
                kv = sum(self.kv_capacity(pool, r.gpus) for r in keep if r.ready_s <= now_s)
                used = self.decode_state.reserved_on(k)
                drained = [r for r in pool.replicas if r.draining]
                for r in sorted(drained, key=lambda r: r.ready_s > now_s, reverse=True):
                    if r.ready_s > now_s or used <= kv:
                        pool.replicas.remove(r)

    # --- the tick -----------------------------------------------------------------------------------

    def enqueue(self, ids: np.ndarray) -> None:
        prefill_plane.route(self, ids)

    def tick(self, t: float, t_end: float, out: TickStats) -> None:
        prefill_plane.run(self, t, t_end, out)
        decode_plane.run(self, t, t_end, out)
        self._finish_drains(t_end)

    # --- observation --------------------------------------------------------------------------------

    def queue_lengths(self) -> dict[PoolKey, int]:
        out = {p.key: len(p.queue) for p in self.prefill}
        for path in self.decode_paths:
            if path.holder is not None:
                out[path.holder.key] = len(self.decode_state.queue)
        return out

    def kv_capacity_ready(self, now_s: float) -> float:
        """Tokens of KV the decode paths' ready replicas hold together."""
        cap = 0.0
        for path in self.decode_paths:
            pool = path.holder
            if pool is not None:
                cap += sum(self.kv_capacity(pool, r.gpus) for r in pool.replicas if r.ready_s <= now_s)
        return cap

    def kv_use(self, now_s: float) -> float | None:
        cap = self.kv_capacity_ready(now_s)
        return min(1.0, float(self.decode_state.reserved.sum()) / cap) if cap > 0 else None

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


def _paths(stage: str, pools: Sequence[Pool], hops: int) -> list[Path]:
    """A whole-model pool is a path of its own; the operator pools of the stage, in order, are another."""
    out = [Path(stage, [p], 0) for p in pools if p.key.operator == "model"]
    ops = sorted((p for p in pools if p.key.operator != "model"), key=lambda p: ORDER.get(p.key.operator, 9))
    if ops:
        out.append(Path(stage, ops, hops))
    return out
