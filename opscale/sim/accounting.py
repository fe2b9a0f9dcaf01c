"""GPU accounting through the real placement: the simulator's replicas are placed on a fleet of 8-GPU H100
nodes by ``opscale.placement.place`` — the function the placement service runs — and "GPUs allocated"
is the number of GPUs holding at least one replica. Replicas share a GPU only where the plan gave them
a share of one (``opscale.model.sharing``): their shares and memory fit it together, and the data plane
runs them at the slowed speed the planner priced. Every other replica takes its GPUs whole.

Each replica's demand:

* memory per GPU: the one memory model's demand (``opscale.model.memory``) — replicas that run attention
  claim the usable memory of their GPUs (of their share) for their KV pool, every other replica its
  weights + one pass's activations, split over its GPUs;
* compute fraction: its share of one GPU, or 1.

While a pool changes GPUs per replica, its old replicas serve until the new ones are ready (make before
break): each shape is placed as a demand of its own (``<operator>@<GPUs>``), so every replica is charged
its own GPUs.

The ledger is level-triggered like the placement service: on every change of the alive replica counts,
``place`` gets the previous placement as ``current`` and the counts as demands; which replica of a pool
it stops is placement's choice (replicas of a pool are interchangeable in the fluid decode model).
Replicas placement cannot fit (fleet too small) are counted as whole GPUs of their own and reported.
"""

from __future__ import annotations

from collections.abc import Mapping

from opscale.model.energy import OperatorLoad, gpu_watts
from opscale.model.memory import replica_memory
from opscale.placement import GpuSlot, NodeInfo, PlacedReplica, PlacementInput, PoolDemand, Topology, place
from opscale.policy.types import PoolKey
from opscale.sim.engine import DataPlane


class GpuLedger:
    def __init__(
        self, dp: DataPlane, *, nodes: int = 48, gpus_per_node: int = 8, deployment: str = "sim"
    ) -> None:
        self.dp = dp
        gpu = dp.gpu
        self.nodes = tuple(
            NodeInfo(
                f"n{i:03d}",
                tuple(GpuSlot(j, gpu.key, gpu.memory_bytes) for j in range(gpus_per_node)),
                Topology(zone="z", s2="s2", s1="s1", s0=f"r{i // 4}", nvlink_domain=f"n{i:03d}"),
            )
            for i in range(nodes)
        )
        self.deployment = deployment
        self.placed: tuple[PlacedReplica, ...] = ()
        self.signature: tuple[tuple[str, float, int], ...] = ()
        self.unplaced_gpus = 0
        self.infeasible_events = 0
        self.calls = 0

    def _memory_per_gpu(self, key: PoolKey, gpus: float) -> int:
        pool = self.dp.pools[key]
        perf = self.dp.perf
        return replica_memory(perf.shape, perf.gpu, key.stage, pool.unit.ops, pool.batch, gpus).per_gpu_bytes

    def _shapes(self) -> dict[tuple[PoolKey, float], int]:
        """Alive replicas per pool and GPUs per replica: while a pool changes shape, replicas of the old
        shape serve until the new ones are ready (``DataPlane._roll``), each on its own GPUs; shapes that
        were placed before and have no replica left are kept at 0, so placement stops theirs."""
        out: dict[tuple[PoolKey, float], int] = {}
        for r in self.placed:
            out[(PoolKey(r.stage, _pool_operator(r.operator)), _shape_gpus(r.operator))] = 0
        for key, pool in self.dp.pools.items():
            out.setdefault((key, pool.gpus), 0)
            for rep in pool.replicas:
                out[(key, rep.gpus)] = out.get((key, rep.gpus), 0) + 1
        return out

    def reconcile(self, busy: Mapping[PoolKey, float]) -> None:
        """Re-place when the alive replica counts (or their GPUs) changed since the last call."""
        shapes = self._shapes()
        sig = tuple(sorted((str(k), g, n) for (k, g), n in shapes.items()))
        if sig == self.signature:
            return
        self.signature = sig
        demands = [
            PoolDemand(
                self.deployment,
                key.stage,
                _shape_name(key.operator, gpus),
                n,
                max(1, int(gpus)),
                self._memory_per_gpu(key, gpus),
                min(1.0, gpus),
                group=self.deployment,
                exchange_bytes_per_token=self._exchange(key, shapes),
            )
            for (key, gpus), n in shapes.items()
        ]
        self.calls += 1
        out = place(PlacementInput(nodes=self.nodes, current=self.placed, demands=tuple(demands)))
        stopped = {r.id for r in out.stop}
        self.placed = tuple(r for r in out.keep if r.id not in stopped) + out.start
        counts: dict[tuple[str, str], int] = {}
        for r in self.placed:
            counts[(r.stage, r.operator)] = counts.get((r.stage, r.operator), 0) + 1
        self.unplaced_gpus = 0
        for (key, gpus), n in shapes.items():
            missing = n - counts.get((key.stage, _shape_name(key.operator, gpus)), 0)
            if missing > 0:
                self.unplaced_gpus += missing * max(1, int(gpus))
        self.infeasible_events += bool(out.infeasible)
        self.dp.same_node = self._same_node()

    def _exchange(
        self, key: PoolKey, shapes: Mapping[tuple[PoolKey, float], int]
    ) -> dict[tuple[str, str], float]:
        """Bytes per token this pool hands to its stage's neighbours (what placement weighs locality by):
        attention ↔ FFN/experts twice per layer, embedding → attention and FFN → lm_head once; to every
        shape of a neighbour that runs."""
        if key.operator in ("model",):
            return {}
        per = float(self.dp.act_bpt)
        layers = self.dp.perf.shape.layers
        mid = ("ffn", "experts")
        out: dict[tuple[str, str], float] = {}
        for other, gpus in shapes:
            if other.stage != key.stage or other == key:
                continue
            pair, name = {key.operator, other.operator}, (other.stage, _shape_name(other.operator, gpus))
            if "attention" in pair and pair & set(mid):
                out[name] = 2 * layers * per
            elif pair in ({"embedding", "attention"}, {"lm_head", "ffn"}, {"lm_head", "experts"}):
                out[name] = per
        return out

    def _same_node(self) -> dict[str, float]:
        """Per stage, the share of (attention, FFN/experts) replica pairs placed on one node."""
        out: dict[str, float] = {}
        for stage in ("prefill", "decode"):
            ops = [(r.node, _pool_operator(r.operator)) for r in self.placed if r.stage == stage]
            att = [n for n, op in ops if op == "attention"]
            mid = [n for n, op in ops if op in ("ffn", "experts")]
            if att and mid:
                out[stage] = sum(a == m for a in att for m in mid) / (len(att) * len(mid))
        return out

    def gpus_allocated(self) -> int:
        return len({(r.node, i) for r in self.placed for i in r.gpu_indices}) + self.unplaced_gpus

    def placed_counts(self) -> dict[PoolKey, int]:
        out: dict[PoolKey, int] = {}
        for r in self.placed:
            k = PoolKey(r.stage, _pool_operator(r.operator))
            out[k] = out.get(k, 0) + 1
        return out

    def watts(self, busy: Mapping[PoolKey, float], now_s: float) -> float:
        """Each GPU holding replicas: idle + Σ (busy power − idle) × busy fraction of its replicas; a
        replica on a share σ of the GPU adds σ of the increment while busy (it runs on σ of the SMs)."""
        gpu = self.dp.gpu
        loads: dict[tuple[str, int], list[OperatorLoad]] = {}
        for r in self.placed:
            key = PoolKey(r.stage, _pool_operator(r.operator))
            pool = self.dp.pools[key]
            frac = min(1.0, max(0.0, busy.get(key, 0.0)))
            share = min(1.0, _shape_gpus(r.operator))
            w = gpu.idle_watts + share * (pool.busy_watts - gpu.idle_watts)
            for i in r.gpu_indices:
                loads.setdefault((r.node, i), []).append(OperatorLoad(w, frac))
        total = sum(gpu_watts(gpu, ls) for ls in loads.values())
        return total + self.unplaced_gpus * gpu.idle_watts


# Placement names a pool by (stage, operator); the ledger places each shape of a pool as its own
# "operator" named ``<operator>@<GPUs per replica>``, so a shape roll places both shapes as they are.


def _shape_name(operator: str, gpus: float) -> str:
    return f"{operator}@{gpus:g}"


def _pool_operator(name: str) -> str:
    return name.partition("@")[0]


def _shape_gpus(name: str) -> float:
    return float(name.partition("@")[2])
