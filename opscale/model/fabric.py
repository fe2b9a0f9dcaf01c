"""The fabric between replicas, as the planners and the simulator both price it (one source for both).

* ``NETWORK_BYTES_S`` — bytes/s one GPU moves to another node: one 400 Gb/s NIC per GPU (the ConnectX-7
  of an HGX H100 node), 50 GB/s.
* ``KV_LINK_BYTES_S`` — the prefill → decode KV hand-off runs over the same NIC: 50 GB/s.
* ``HOP_LATENCY_S`` — fixed cost of one activation hand-off between operator replicas (a send/receive
  pair of a few KB to MB; ~10 µs is the order of NCCL/NVSHMEM point-to-point latency inside a node).
* Inside a node, hand-offs run over NVLink at the GPU catalog's link bandwidth, one direction
  (``GpuSpec.link_bytes_s / 2``).

Where replicas sit decides which applies. Placement keeps a stage's operator pools together
(``opscale.placement``, stage by stage); a stage whose replicas fit one 8-GPU node then hands off over
NVLink only, and a larger one spreads its pools over ⌈GPUs/8⌉ nodes, so about one attention↔FFN pair
in that many shares a node — and no more than the replicas' sizes leave room for (``same_node_share``);
the rest cross the network.
"""

from __future__ import annotations

import math

NETWORK_BYTES_S = 50e9
KV_LINK_BYTES_S = 50e9
HOP_LATENCY_S = 10e-6
NODE_GPUS = 8


def same_node_share(
    stage_gpus: float,
    pair: tuple[tuple[float, int], tuple[float, int]] | None = None,
    node_gpus: int = NODE_GPUS,
) -> float:
    """Expected share of a stage's attention↔FFN replica pairs on one node, packed stage by stage: all of
    them when the stage fits one node, else about one in ⌈GPUs/8⌉ — and never more than a node has room
    for. ``pair``: (GPUs per replica, replicas) of the attention pool and of the FFN (or experts) pool.
    A node holding an attention replica of a GPUs has room beside it for ⌊(8 − a)/f⌋ FFN replicas of f
    GPUs, so at most that many of the R_f FFN replicas share its node (none when a + f > 8: a 4-GPU
    attention replica and an 8-GPU FFN replica never share a node), and the same from the FFN side."""
    share = 1.0 if stage_gpus <= node_gpus else 1.0 / math.ceil(stage_gpus / node_gpus)
    if pair is None:
        return share
    (a, r_a), (f, r_f) = pair
    room_a = max(0, math.floor((node_gpus - a) / f + 1e-9))  # FFN replicas beside one attention replica
    room_f = max(0, math.floor((node_gpus - f) / a + 1e-9))
    return min(share, room_a / max(1, r_f), room_f / max(1, r_a))


def seconds_per_byte(nvlink_bytes_s: float, same_node: float) -> float:
    """Mean seconds per hand-off byte when ``same_node`` of the pairs use NVLink (one direction)."""
    return same_node / (nvlink_bytes_s / 2) + (1.0 - same_node) / NETWORK_BYTES_S
