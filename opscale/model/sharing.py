"""GPU sharing: an operator replica may run on a share σ of one GPU, and what that costs.

A shared replica gets σ of the GPU's SMs (MPS ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` = 100·σ, or a MIG
slice), σ of its usable memory (the engine's memory fraction; ``opscale.model.memory``), and, while
its neighbours work, σ of its memory bandwidth. Co-located replicas' shares sum to at most 1 per GPU
(placement packs them; ``opscale.placement``).

Interference model (roofline). A pass that does F FLOPs and moves Q bytes takes
``max(F / P, Q / W)`` on the whole GPU. On σ of the SMs its compute-bound part takes F / (σ·P); its
memory-bound part takes Q / (β·W), where β is the share of bandwidth it can draw. We take β = σ: the
neighbours are assumed busy and drawing their own share. So every pass of a shared replica takes 1/σ
as long — for compute-bound and memory-bound operators alike — and the only gain from sharing is the
idle time of replicas that are busy a small share of the time (embedding, lm_head, the attention of a
lightly loaded stage). Two memory-bound replicas on one GPU gain nothing from running side by side;
a compute-bound replica beside a memory-bound one could run faster than this model says (each would
draw more of the resource the other leaves), which is not credited: we have no measurement of that
overlap on the profiled GPUs, and crediting it unmeasured would flatter the operator policy.

Where a replica shares a GPU with no share set (placement time-slicing two whole-GPU demands), the
simulator does not allow it: a replica without a share holds whole GPUs.
"""

from __future__ import annotations

SHARES = (0.125, 0.25, 0.5)  # the shares a one-GPU replica may take, besides the whole GPU


def shared_pass_ms(whole_gpu_ms: float, share: float) -> float:
    """A pass on ``share`` of one GPU (module docstring)."""
    return whole_gpu_ms / share
