"""GPU discovery port: NVML on GPU hosts, a fake inventory (``--fake-gpus 8xH100``) everywhere else.

Both return the same values, so everything after discovery (registration, ``CUDA_VISIBLE_DEVICES``,
telemetry reports) runs one code path. ``pynvml`` (the ``nvidia-ml-py`` distribution) is imported only
when NVML is actually used, so CPU hosts and tests never need it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from opscale.errors import ConfigError
from opscale.model import get_gpu

_FAKE = re.compile(r"(\d+)x([A-Za-z0-9_.-]+)")


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    uuid: str
    gpu_type: str
    memory_bytes: int
    nvlink_domain: str = ""


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    uuid: str
    utilization_fraction: float
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float


class GpuDiscovery(Protocol):
    def discover(self) -> tuple[Gpu, ...]: ...

    def sample(self, busy: frozenset[int]) -> tuple[GpuSample, ...]:
        """Telemetry now; ``busy`` is the GPU indices the agent has replicas on (the fake uses it)."""
        ...


def parse_fake_gpus(text: str, node: str) -> tuple[Gpu, ...]:
    """``8xH100`` or ``2xH100,2xA100`` -> GPUs numbered 0.. in that order, memory from the GPU catalog."""
    gpus: list[Gpu] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        match = _FAKE.fullmatch(part)
        if match is None:
            raise ConfigError(f"fake GPUs: {part!r} must look like 8xH100")
        count, gpu_type = int(match.group(1)), match.group(2)
        if not 1 <= count <= 64:
            raise ConfigError(f"fake GPUs: count in {part!r} must be in [1, 64]")
        try:
            memory = get_gpu(gpu_type).memory_bytes
        except Exception as exc:  # an unknown type: say which ones exist
            raise ConfigError(f"fake GPUs: {exc}") from None
        for _ in range(count):
            index = len(gpus)
            gpus.append(Gpu(index, f"FAKE-{node}-{index}", gpu_type, memory, f"{node}-nvlink"))
    if not gpus:
        raise ConfigError("fake GPUs: give at least one, e.g. 8xH100")
    return tuple(gpus)


class FakeGpus:
    """A GPU-less host pretending to have GPUs: idle draw when free, a steady busy draw when assigned."""

    def __init__(self, text: str, node: str) -> None:
        self._gpus = parse_fake_gpus(text, node)

    def discover(self) -> tuple[Gpu, ...]:
        return self._gpus

    def sample(self, busy: frozenset[int]) -> tuple[GpuSample, ...]:
        out = []
        for gpu in self._gpus:
            spec = get_gpu(gpu.gpu_type)
            on = gpu.index in busy
            out.append(
                GpuSample(
                    index=gpu.index,
                    uuid=gpu.uuid,
                    utilization_fraction=0.5 if on else 0.0,
                    memory_used_bytes=gpu.memory_bytes // 2 if on else 0,
                    memory_total_bytes=gpu.memory_bytes,
                    power_watts=(spec.idle_watts + spec.max_watts) / 2 if on else spec.idle_watts,
                )
            )
        return tuple(out)


def _gpu_type(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100': the catalog name the board name contains, else the board name."""
    from opscale.model import CATALOG

    upper = name.upper()
    for known in sorted(CATALOG, key=len, reverse=True):
        if known.upper() in upper:
            return known
    return name


class NvmlGpus:
    """Real GPUs through NVML (``nvidia-ml-py``)."""

    def __init__(self, node: str) -> None:
        try:
            import pynvml  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError(
                "NVML discovery needs the nvidia-ml-py package (import pynvml); install it, or run the "
                "agent with --fake-gpus 8xH100 on a host without GPUs"
            ) from None
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            raise ConfigError(f"NVML failed to initialise ({exc}); no GPU driver? try --fake-gpus") from None
        self._node = node

    def _handle(self, index: int) -> Any:
        return self._nvml.nvmlDeviceGetHandleByIndex(index)

    def discover(self) -> tuple[Gpu, ...]:
        nv = self._nvml
        out = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = self._handle(index)
            name = nv.nvmlDeviceGetName(handle)
            uuid = nv.nvmlDeviceGetUUID(handle)
            memory = nv.nvmlDeviceGetMemoryInfo(handle).total
            out.append(
                Gpu(
                    index,
                    uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    _gpu_type(name.decode() if isinstance(name, bytes) else str(name)),
                    int(memory),
                    f"{self._node}-nvlink",  # one NVLink domain per host (HGX); NVSwitch fabrics differ
                )
            )
        return tuple(out)

    def sample(self, busy: frozenset[int]) -> tuple[GpuSample, ...]:
        nv = self._nvml
        out = []
        for gpu in self.discover():
            handle = self._handle(gpu.index)
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            power_mw = nv.nvmlDeviceGetPowerUsage(handle)
            out.append(
                GpuSample(
                    gpu.index, gpu.uuid, util.gpu / 100.0, int(memory.used), int(memory.total), power_mw / 1e3
                )
            )
        return tuple(out)


def make_discovery(fake_gpus: str, node: str) -> GpuDiscovery:
    return FakeGpus(fake_gpus, node) if fake_gpus else NvmlGpus(node)
