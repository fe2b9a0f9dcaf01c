"""The one memory model: what a replica holds on its GPUs. The planners size replicas with it, placement
checks them against it, and the simulator's KV cache and GPU ledger use it — so a replica a planner
plans is a replica placement can place, and the simulator runs exactly that replica.

Rules:

* **Usable memory** of a GPU is ``USABLE_MEMORY_FRACTION`` (0.9) of it; the rest is the CUDA context,
  allocator slack and fragmentation (vLLM's default ``gpu_memory_utilization`` is 0.9 for the same
  reason). Placement compares demands with usable memory, never with the full card.
* **Weights** of every operator the replica runs (``opscale.model.operators.weights_bytes``), split
  evenly over its GPUs.
* **Activations**: the largest working set of one pass (the replica's operators run one after another
  and reuse it). A decode pass processes ``batch`` tokens; a prefill pass at most
  ``PREFILL_CHUNK_TOKENS``: engines prefill in chunks of a token budget (SGLang's
  ``chunked_prefill_size`` and vLLM's ``max_num_batched_tokens`` both default to 8192 on large GPUs),
  so a 100k-token prompt is prefilled in chunks and its working set stays that of one chunk.
* **KV cache**: a replica that runs attention holds KV — decode attention for its resident sequences,
  prefill attention for the prompts it is prefilling until they are handed off. Like vLLM and SGLang, it
  pre-allocates every byte left after weights and activations as its KV pool, so it *claims all usable
  memory of its GPUs* and shares them with nothing; ``kv_capacity_bytes`` is that pool. Under tensor
  parallelism the KV heads are split over the GPUs, but a GPU never holds less than one KV head: with
  more GPUs than KV heads each head is replicated (vLLM does this), so the pool holds ``gpus/kv_heads``×
  fewer tokens.
* A replica that runs no attention needs weights + activations; the rest of its GPUs' memory may hold
  other replicas (placement packs them).
* A **shared** replica (``gpus`` σ < 1: a share of one GPU, ``opscale.model.sharing``) has σ of the
  GPU's usable memory: an attention replica's KV pool is what is left of that share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from opscale.errors import InvalidArgument
from opscale.model.gpus import GpuSpec
from opscale.model.operators import OperatorKind, activation_working_bytes, weights_bytes
from opscale.model.shapes import ModelShape

USABLE_MEMORY_FRACTION = 0.9
PREFILL_CHUNK_TOKENS = 8192


def usable_bytes(memory_bytes: int) -> int:
    """Bytes of a GPU with ``memory_bytes`` that replicas may use."""
    return int(memory_bytes * USABLE_MEMORY_FRACTION)


def holds_kv(ops: Sequence[str]) -> bool:
    return OperatorKind.ATTENTION.value in ops


def pass_tokens(stage: str, batch: int) -> int:
    """Tokens of one pass's activation working set."""
    return batch if stage != "prefill" else PREFILL_CHUNK_TOKENS


@dataclass(frozen=True, slots=True)
class ReplicaMemory:
    """One replica of ``gpus`` GPUs: what it holds and what placement reserves per GPU."""

    gpus: float  # below 1: a share of one GPU
    weights_bytes: int
    activation_bytes: int
    kv_capacity_bytes: int  # KV pool (attention replicas); 0 for the others
    kv_bytes_per_token: int  # what one token of context costs this replica (replication included)
    per_gpu_bytes: int  # placement's demand per GPU
    usable_per_gpu: int
    holder: bool

    @property
    def fits(self) -> bool:
        if self.holder:
            return self.kv_capacity_bytes > 0
        return self.per_gpu_bytes <= self.usable_per_gpu

    def kv_tokens(self) -> float:
        """Tokens of context the KV pool holds (0 when the replica holds none)."""
        return self.kv_capacity_bytes / self.kv_bytes_per_token if self.kv_bytes_per_token else 0.0


@lru_cache(maxsize=1 << 14)
def replica_memory(
    shape: ModelShape, gpu: GpuSpec, stage: str, ops: tuple[str, ...], batch: int, gpus: float
) -> ReplicaMemory:
    """The memory of one replica running ``ops`` of ``stage`` at pass size ``batch`` on ``gpus`` GPUs; a
    ``gpus`` below 1 is a share of one GPU (``opscale.model.sharing``)."""
    if batch < 1 or not 0.0 < gpus <= 64 or (gpus > 1 and gpus != int(gpus)) or not ops:
        raise InvalidArgument(
            f"batch ({batch}) must be >= 1, gpus ({gpus}) a whole count or a share in (0, 1], ops non-empty",
            field="batch",
        )
    share = min(1.0, gpus)
    gpus = max(1, int(gpus))
    kinds = [OperatorKind(op) for op in ops]
    weights = sum(weights_bytes(shape, k) for k in kinds)
    tokens = pass_tokens(stage, batch)
    act = max(activation_working_bytes(shape, k, tokens) for k in kinds)
    usable = int(usable_bytes(gpu.memory_bytes) * share)
    holder = holds_kv(ops)
    kv_per_token = shape.kv_bytes_per_token * max(1, math.ceil(gpus / shape.kv_heads))
    if holder:
        capacity = max(0, usable * gpus - weights - act)
        return ReplicaMemory(share * gpus, weights, act, capacity, kv_per_token, usable, usable, True)
    per_gpu = math.ceil((weights + act) / gpus)
    return ReplicaMemory(share * gpus, weights, act, 0, 0, per_gpu, usable, False)


def min_gpus(
    shape: ModelShape,
    gpu: GpuSpec,
    stage: str,
    ops: tuple[str, ...],
    batch: int,
    kv_tokens: float = 0.0,
    most: int = 64,
) -> int | None:
    """Fewest GPUs (a power of two) whose replica fits and, for an attention replica, holds
    ``kv_tokens`` tokens of context; None when not even ``most`` GPUs do."""
    g = 1
    while g <= most:
        m = replica_memory(shape, gpu, stage, ops, batch, g)
        if m.fits and (not m.holder or m.kv_tokens() >= kv_tokens):
            return g
        g *= 2
    return None
