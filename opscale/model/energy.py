"""Power and energy of GPUs running operators.

One GPU draws its idle power plus, for each operator busy on it, that operator's busy power above idle
weighted by the share of time it is busy, capped at the board limit::

    P = min(P_max, P_idle + Σ_ops (P_busy,op − P_idle) · busy_fraction_op)

(``PerfModel.busy_watts`` gives P_busy,op, which includes idle.) Co-located operators whose busy
fractions add up past 1 are time-sharing the GPU, so their sum can exceed what the board allows —
hence the cap.

A fleet is reported two ways (docs/design.md, "The model behind a plan"): with GPUs that hold no
replica drawing idle power (they stay powered in the pool), and with them released (0 W to this
deployment).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from opscale.errors import InvalidArgument
from opscale.model.gpus import GpuSpec


@dataclass(frozen=True, slots=True)
class OperatorLoad:
    busy_watts: float  # board power while this operator runs (idle included)
    busy_fraction: float  # share of wall time it runs, in [0, 1]

    def __post_init__(self) -> None:
        if not 0.0 <= self.busy_fraction <= 1.0:
            raise InvalidArgument(
                f"busy_fraction must be in [0, 1], got {self.busy_fraction}", field="busy_fraction"
            )
        if self.busy_watts < 0:
            raise InvalidArgument(f"busy_watts must be >= 0, got {self.busy_watts}", field="busy_watts")


@dataclass(frozen=True, slots=True)
class GpuDraw:
    """One GPU of the fleet and what runs on it; ``loads`` empty means no replica is placed there."""

    gpu: GpuSpec
    loads: tuple[OperatorLoad, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetPower:
    watts_idle_unallocated: float  # GPUs without replicas draw idle power
    watts_released_unallocated: float  # GPUs without replicas are handed back: 0 W
    allocated_gpus: int
    unallocated_gpus: int


def gpu_watts(gpu: GpuSpec, loads: Iterable[OperatorLoad]) -> float:
    extra = sum((load.busy_watts - gpu.idle_watts) * load.busy_fraction for load in loads)
    # A busy power below idle (a bad profile row) must not pull the GPU under its idle floor.
    return min(gpu.max_watts, gpu.idle_watts + max(extra, 0.0))


def fleet_watts(gpus: Iterable[GpuDraw]) -> FleetPower:
    allocated_w = 0.0
    idle_w = 0.0
    allocated = unallocated = 0
    for draw in gpus:
        if draw.loads:
            allocated += 1
            allocated_w += gpu_watts(draw.gpu, draw.loads)
        else:
            unallocated += 1
            idle_w += draw.gpu.idle_watts
    return FleetPower(
        watts_idle_unallocated=allocated_w + idle_w,
        watts_released_unallocated=allocated_w,
        allocated_gpus=allocated,
        unallocated_gpus=unallocated,
    )


def energy_kwh(samples: Sequence[tuple[float, float]], *, hold: bool = True) -> float:
    """Energy of a power time series ``[(t_s, watts), …]`` in kWh.

    ``hold=True`` (default) treats each sample as the power until the next one (a step function: what a
    control plane's allocation decisions produce); ``hold=False`` integrates by the trapezoid rule (for
    sampled power readings). The last sample only closes the interval; nothing is assumed after it.
    """
    joules = 0.0
    for (t0, w0), (t1, w1) in pairwise(samples):
        if t1 < t0:
            raise InvalidArgument(f"sample times must not decrease ({t0} then {t1})", field="samples")
        joules += (t1 - t0) * (w0 if hold else (w0 + w1) / 2)
    return joules / 3.6e6
