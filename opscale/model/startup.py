"""How long a replica takes to start: its weights over the host links of its GPUs, plus a fixed overhead.
The simulator charges it and the planners' forecast horizon uses it (``opscale.policy.adaptive``).

``LOAD_BYTES_S_PER_GPU`` (5 GB/s per GPU): safetensors read from local NVMe into GPU memory, one stream
per GPU — PCIe 4 x16 moves ~25 GB/s, a datacenter NVMe drive reads 3–7 GB/s, so the drive bounds it.
``OVERHEAD_S`` (3 s): process start, CUDA context and graph capture. Both are per GPU type tables in the
simulator's configuration (``opscale.sim.engine.SimConfig``), these are their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

LOAD_BYTES_S_PER_GPU = 5e9
OVERHEAD_S = 3.0


def startup_s(
    gpu: str,
    weights_bytes: float,
    gpus: float,
    load_bytes_s: Mapping[str, float] | None = None,
    overhead_s: Mapping[str, float] | None = None,
) -> float:
    """Seconds from start to ready for a replica loading ``weights_bytes`` onto ``gpus`` GPUs (a share of
    one GPU loads over that GPU's link)."""
    bw = (load_bytes_s or {}).get(gpu, LOAD_BYTES_S_PER_GPU)
    return weights_bytes / (bw * max(1.0, gpus)) + (overhead_s or {}).get(gpu, OVERHEAD_S)
