"""Operator profiles *estimated* for a model never profiled on a GPU, from its published config.

Method: shape transfer by roofline. A measured model of the same family (``REFERENCES``: same operator
kinds, same attention layout) gives every point — the same batches, prompt and KV lengths the profiler
ran — and each measured piece is scaled by the roofline time of the new shape's work over the
reference shape's work at that point, on the same card::

    t_new = t_ref × max(F_new / P, Q_new / W) / max(F_ref / P, Q_ref / W)

with F, Q per piece from ``opscale.model.roofline.piece_work`` and P, W the catalog's H100 figures
(``opscale.model.gpus``: the H100's measured 779 TFLOP/s bf16 matmul and 2,415 GB/s copy, which are
78.7% and 72.1% of its datasheet 989.5 TFLOP/s dense bf16 and 3.35 TB/s). Carrying the *measured* time
over, rather than pricing the new shape at the bare roofline, keeps what the roofline cannot see (launch
floors, kernel efficiency at small shapes) at the reference's level. Power rows are kept as measured
(the same card at the same busy fraction).

How good it is where we can check it: the same transfer from llama3-8b to llama3-70b and to qwen2-7b,
against their measured profiles, is tested in ``tests/unit/test_model_estimate.py`` (the error figures
are in the test's comment). Every profile built here carries ``provenance.derived`` starting with
"estimated", ``PerfModel.estimated`` is True for a model that uses one, and reports flag it, until the
model is profiled on a GPU (``scripts/convert_profiles.py`` on the profiler's output) and its measured
profile takes precedence.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from opscale.errors import InvalidArgument
from opscale.model.gpus import get_gpu
from opscale.model.operators import operator_kinds
from opscale.model.profiles import ModelProfile, OperatorProfile, packaged_profiles
from opscale.model.roofline import transfer_point
from opscale.model.shapes import ESTIMATED, ModelShape

# The measured model each estimated preset is transferred from: same family, same operator kinds.
REFERENCES: Mapping[str, str] = {"mixtral-8x22b": "mixtral-8x7b"}
ESTIMATED_PREFIX = "estimated"


def estimate_profile(shape: ModelShape, reference: ModelProfile) -> ModelProfile:
    """``reference``'s measured points carried over to ``shape`` by roofline, on the same GPU type."""
    if operator_kinds(shape) != operator_kinds(reference.shape):
        have = sorted(k.value for k in operator_kinds(reference.shape))
        want = sorted(k.value for k in operator_kinds(shape))
        raise InvalidArgument(
            f"cannot estimate {shape.name!r} from {reference.model!r}: operators {want} vs {have}; "
            "pick a reference of the same family (dense from dense, MoE from MoE)",
            field="reference",
        )
    gpu = get_gpu(reference.gpu_type)
    ops = tuple(
        OperatorProfile(
            stage=op.stage,
            kind=op.kind,
            points=tuple(
                transfer_point(op.stage, op.kind, p, (reference.shape, gpu), (shape, gpu)) for p in op.points
            ),
        )
        for op in reference.operators
    )
    how = (
        f"{ESTIMATED_PREFIX}: roofline shape transfer {reference.model} -> {shape.name} on {gpu.key} "
        "(not profiled on a GPU)"
    )
    derived = reference.with_operators(ops, derived=how)
    return ModelProfile(
        model=shape.name,
        gpu_type=reference.gpu_type,
        shape=shape,
        operators=derived.operators,
        reference_layers=(),  # whole-layer checks were measured for the reference shape only
        provenance=derived.provenance,
    )


def is_estimated(profile: ModelProfile) -> bool:
    return (profile.provenance.derived or "").startswith(ESTIMATED_PREFIX)


@lru_cache(maxsize=1)
def estimated_profiles() -> tuple[ModelProfile, ...]:
    """A profile for every ``ESTIMATED`` preset not measured in the package, on each GPU type its
    reference was measured on."""
    measured = packaged_profiles()
    have = {p.model for p in measured}
    out = []
    for name, shape in ESTIMATED.items():
        if name in have:
            continue  # profiled since: the measurement wins
        refs = [p for p in measured if p.model == REFERENCES[name]]
        out += [estimate_profile(shape, ref) for ref in refs]
    return tuple(out)
