"""Model shapes, operator graph, profiles, latency interpolation, roofline scaling, GPUs and energy.

Pure: no I/O except reading this package's own data (and a profile path a caller passes in), no clocks,
no randomness. The planner's entry point is ``PerfModel`` (or the shared ``perf_model(shape, gpu)``).
"""

from opscale.model.energy import FleetPower, GpuDraw, OperatorLoad, energy_kwh, fleet_watts, gpu_watts
from opscale.model.gpus import CATALOG, GpuSpec, get_gpu
from opscale.model.operators import (
    OperatorKind,
    OperatorSpec,
    Stage,
    operator_kinds,
    operators_for,
    tokens_per_pass,
    weights_bytes,
)
from opscale.model.perf import PerfModel, perf_model
from opscale.model.profiles import ModelProfile, load_profile, load_profile_file, packaged_profiles
from opscale.model.shapes import PRESETS, ModelShape, get_preset, shape_from_hf_config

__all__ = [
    "CATALOG",
    "PRESETS",
    "FleetPower",
    "GpuDraw",
    "GpuSpec",
    "ModelProfile",
    "ModelShape",
    "OperatorKind",
    "OperatorLoad",
    "OperatorSpec",
    "PerfModel",
    "Stage",
    "energy_kwh",
    "fleet_watts",
    "get_gpu",
    "get_preset",
    "gpu_watts",
    "load_profile",
    "load_profile_file",
    "operator_kinds",
    "operators_for",
    "packaged_profiles",
    "perf_model",
    "shape_from_hf_config",
    "tokens_per_pass",
    "weights_bytes",
]
