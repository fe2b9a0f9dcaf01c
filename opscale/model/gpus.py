"""GPU catalog: the ceilings the performance and energy models need, with where each number comes from.

Datasheet numbers are public NVIDIA figures, quoted as printed. Where a datasheet gives Tensor Core
FLOP/s only "with sparsity" (2:4 structured), the dense figure we use is half of it, and the comment
says so. Datasheets never give idle power, and quote memory in "GB" that are close to GiB (nvidia-smi
on our H100 80GB reports 85,520,809,984 B); we store datasheet GB × 10^9, a slight underestimate.

Peak numbers are not what kernels reach. Our H100 was measured (../shared/profiles/h100/gpu.json): an
8192³ bf16 matmul runs at 779 TFLOP/s (78.7% of the 989.5 dense peak) and a device-to-device copy at
2415.4 GB/s counted as bytes read + written (72.1% of 3.35 TB/s). For other cards we assume the same
fractions of their datasheet peaks, so every *ratio* between two cards is the ratio of their datasheet
figures, and the H100 keeps its measured absolute ceilings. Idle power likewise: measured 127.929 W on
the H100 (18.3% of its 700 W limit), the same fraction of the limit elsewhere, flagged as estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opscale.errors import InvalidArgument

# Measured on the profiled H100 (../shared/profiles/h100/gpu.json).
H100_MEASURED_BF16_FLOPS = 779.0e12
H100_MEASURED_COPY_BYTES_S = 2415.4e9
H100_MEASURED_IDLE_WATTS = 127.929
H100_MEASURED_MEMORY_BYTES = 85_520_809_984

# H100 SXM5 datasheet peaks, for the efficiency fractions below.
_H100_DATASHEET_BF16_FLOPS = 989.5e12  # "BF16 Tensor Core 1,979 TFLOPS*" (*with sparsity), halved
_H100_DATASHEET_BYTES_S = 3.35e12  # "GPU memory bandwidth 3.35TB/s"
_H100_DATASHEET_WATTS = 700.0  # "Max thermal design power (TDP) Up to 700W"

FLOPS_EFFICIENCY = H100_MEASURED_BF16_FLOPS / _H100_DATASHEET_BF16_FLOPS  # 0.787
BANDWIDTH_EFFICIENCY = H100_MEASURED_COPY_BYTES_S / _H100_DATASHEET_BYTES_S  # 0.721
IDLE_FRACTION_OF_LIMIT = H100_MEASURED_IDLE_WATTS / _H100_DATASHEET_WATTS  # 0.183


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One GPU type. FLOP/s and bandwidths are the *achievable* figures used by the models."""

    key: str
    name: str
    bf16_flops: float  # dense bf16 Tensor Core FLOP/s a large GEMM reaches
    memory_bytes_s: float  # streaming HBM/GDDR bandwidth, bytes read + written per second
    memory_bytes: int
    idle_watts: float
    max_watts: float  # board power limit (TDP)
    nvlink: bool
    link_bytes_s: float  # per-GPU interconnect bandwidth, both directions together (NVLink or PCIe)
    measured: bool  # True: bf16_flops, memory_bytes_s, idle_watts measured on this card type
    aliases: tuple[str, ...] = ()

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity above which a kernel is compute-bound on this card (roofline ridge)."""
        return self.bf16_flops / self.memory_bytes_s


def _from_datasheet(
    key: str,
    name: str,
    *,
    dense_bf16_tflops: float,
    memory_tb_s: float,
    memory_gb: float,
    tdp_watts: float,
    nvlink: bool,
    link_gb_s: float,
    aliases: tuple[str, ...],
) -> GpuSpec:
    return GpuSpec(
        key=key,
        name=name,
        bf16_flops=dense_bf16_tflops * 1e12 * FLOPS_EFFICIENCY,
        memory_bytes_s=memory_tb_s * 1e12 * BANDWIDTH_EFFICIENCY,
        memory_bytes=int(memory_gb * 1e9),
        idle_watts=tdp_watts * IDLE_FRACTION_OF_LIMIT,
        max_watts=tdp_watts,
        nvlink=nvlink,
        link_bytes_s=link_gb_s * 1e9,
        measured=False,
        aliases=aliases,
    )


CATALOG: Mapping[str, GpuSpec] = {
    g.key: g
    for g in (
        # NVIDIA H100 80GB HBM3 (SXM5), measured; power limit and NVLink from the "NVIDIA H100 Tensor Core
        # GPU" datasheet: "Max thermal design power (TDP) Up to 700W", "NVLink: 900GB/s".
        GpuSpec(
            key="h100",
            name="NVIDIA H100 SXM5 80GB",
            bf16_flops=H100_MEASURED_BF16_FLOPS,
            memory_bytes_s=H100_MEASURED_COPY_BYTES_S,
            memory_bytes=H100_MEASURED_MEMORY_BYTES,
            idle_watts=H100_MEASURED_IDLE_WATTS,
            max_watts=700.0,
            nvlink=True,
            link_bytes_s=900e9,
            measured=True,
            aliases=("h100-sxm", "h100-sxm5", "h100-80g", "h100-80gb", "h100-sxm5-80gb", "h100-80gb-hbm3"),
        ),
        # "NVIDIA H200 Tensor Core GPU" datasheet (H200 SXM): "BF16 Tensor Core 1,979 TFLOPS*"
        # (*with sparsity; halved), "GPU memory 141GB", "4.8TB/s", "Max TDP Up to 700W", "NVLink 900GB/s".
        _from_datasheet("h200", "NVIDIA H200 SXM 141GB", dense_bf16_tflops=989.5, memory_tb_s=4.8,
                        memory_gb=141, tdp_watts=700, nvlink=True, link_gb_s=900,
                        aliases=("h200-sxm", "h200-141g", "h200-141gb")),
        # "NVIDIA A100 Tensor Core GPU" datasheet (A100 80GB SXM): "BFLOAT16 Tensor Core 312 TFLOPS |
        # 624 TFLOPS*" (dense | sparse), "80GB HBM2e", "2,039GB/s", "Max TDP 400W", "NVLink 600GB/s".
        _from_datasheet("a100-80g", "NVIDIA A100 SXM4 80GB", dense_bf16_tflops=312, memory_tb_s=2.039,
                        memory_gb=80, tdp_watts=400, nvlink=True, link_gb_s=600,
                        aliases=("a100", "a100-sxm", "a100-80gb", "a100-sxm4-80gb", "a100-sxm-80gb")),
        # NVIDIA H20 (China-market Hopper): NVIDIA publishes no public datasheet for it; these are the
        # figures of NVIDIA's spec sheet as reported by the trade press (e.g. TweakTown, 2024, "H100 SXM
        # is 6.68x faster"): FP16/BF16 Tensor 148 TFLOPS dense (296 is the FP8/INT8 figure), 96GB HBM3,
        # 4.0TB/s, 400W TDP, NVLink 900GB/s. Replace with a measurement when we have one.
        _from_datasheet("h20", "NVIDIA H20 96GB", dense_bf16_tflops=148, memory_tb_s=4.0, memory_gb=96,
                        tdp_watts=400, nvlink=True, link_gb_s=900, aliases=("h20-96g", "h20-96gb")),
        # "NVIDIA L40S" datasheet: "BF16 Tensor Core 362.05 | 733* TFLOPS" (dense | sparse), "48GB GDDR6
        # with ECC", "864GB/s", "Max power consumption 350W", "PCIe Gen4 x16: 64GB/s bidirectional",
        # no NVLink.
        _from_datasheet("l40s", "NVIDIA L40S 48GB", dense_bf16_tflops=362.05, memory_tb_s=0.864,
                        memory_gb=48, tdp_watts=350, nvlink=False, link_gb_s=64, aliases=("l40s-48g",)),
        # "NVIDIA HGX B200" (HGX/DGX B200 datasheets, 8 GPUs): "FP16/BF16 Tensor Core 36 PFLOPS" with
        # sparsity per 8 GPUs = 4.5 PFLOPS per GPU, halved to 2.25 dense; "1,440GB" total memory
        # = 180GB per GPU; "64TB/s" HBM3e total = 8TB/s per GPU; 1,000W per GPU (HGX B200 TDP);
        # fifth-generation NVLink 1.8TB/s per GPU.
        _from_datasheet("b200", "NVIDIA B200 180GB (HGX)", dense_bf16_tflops=2250, memory_tb_s=8.0,
                        memory_gb=180, tdp_watts=1000, nvlink=True, link_gb_s=1800,
                        aliases=("b200-sxm", "b200-180g", "b200-180gb", "hgx-b200")),
    )
}  # fmt: skip


def _normalise(name: str) -> str:
    key = "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
    return key.removeprefix("nvidia-")


_ALIASES: Mapping[str, str] = {
    _normalise(alias): g.key for g in CATALOG.values() for alias in (g.key, g.name, *g.aliases)
}


def get_gpu(name: str) -> GpuSpec:
    """The catalog entry for ``name``: a key (``h100``), an alias (``H100-SXM``, ``h100_80gb``) or the
    name NVML reports (``NVIDIA H100 80GB HBM3``); case, spaces, ``-`` and ``_`` do not matter."""
    key = _ALIASES.get(_normalise(name))
    if key is None:
        raise InvalidArgument(
            f"unknown GPU type {name!r}; known types: {', '.join(sorted(CATALOG))}", field="gpu_type"
        )
    return CATALOG[key]
