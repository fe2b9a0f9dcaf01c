"""Roofline scaling: an operator's latency on a GPU type we never profiled, from one we did.

Derivation. A kernel that does F FLOPs and moves Q bytes takes at least
``t = max(F / P, Q / W)`` on a card with achievable FLOP/s P and bandwidth W (the roofline; which term
wins depends on the arithmetic intensity I = F / Q against the ridge point P / W). A measured time is
that bound plus overheads we cannot see, so we carry the *measured* time over in proportion::

    t_dst = t_src × max(F / P_dst, Q / W_dst) / max(F / P_src, Q / W_src)

If I is above the source ridge (compute-bound there) and above the destination ridge, the factor is
exactly P_src / P_dst (peak FLOP/s ratio); if I is below both ridges (memory-bound) it is exactly
W_src / W_dst (bandwidth ratio). Only between the two ridges (usually close: H100 ≈ 322 FLOP/B, H200
≈ 225, B200 ≈ 307; far apart only for the H20, ≈ 40) does a point change regime, and the formula then
gives the roofline answer instead of a jump between the two ratios. Our catalog's P and W are
the H100's measured ceilings and, for other cards, the same fractions of their datasheet peaks, so the
ratios are datasheet ratios (see ``opscale.model.gpus``).

F and Q per piece, for T tokens (T = B × S in prefill, T = B in decode), one layer, b = dtype bytes,
d = hidden, q = heads × head_dim, k = kv_heads × head_dim, f = ffn, V = vocab:

    rmsnorm (×2)     F = 2 · 4·T·d                     Q = 2 · (2·T·d + d)·b
    qkv_proj         F = 2·T·d·(q+2k)                  Q = (d·(q+2k) + T·d + T·(q+2k))·b
    o_proj           F = 2·T·q·d                       Q = (q·d + T·q + T·d)·b
    core, prefill    F = 2·B·S²·q  (QKᵀ and PV, 2·S²·head_dim each per head, halved by the causal mask)
                     Q = B·S·(2q + 2k)·b               (read Q, K, V, write O; flash never spills scores)
    core, decode     F = 4·B·L·q                       Q = (B·L·2k + 2·B·q)·b   (read the KV cache)
    embedding        F = 0                             Q = 2·T·d·b              (gather rows, write them)
    mlp, dense       F = 6·T·d·f                       Q = (3·d·f + 2·T·d)·b
    mlp, MoE         F = 6·T·(top_k·f + f_shared)·d    Q = (3·d·(E·f + f_shared) + 2·T·d)·b
                     (every expert's weights are read: the profiler runs a GEMM pair per expert at
                     every T; mixtral's 1-token time, 1.07 ms, is 8 × llama3-8b's 0.14 ms)
    lm_head          F = 2·T·d·V                       Q = (V·d + T·d + 2·T·V)·b  (logits written, re-read)

Overheads (launch latency, the ~18 µs floor of tiny kernels) are scaled with the bandwidth ratio, as the
points they dominate are memory-bound; that flatters faster cards slightly at batch 1.
"""

from __future__ import annotations

from opscale.model.gpus import GpuSpec
from opscale.model.operators import OperatorKind, Stage
from opscale.model.profiles import ModelProfile, OperatorProfile, ProfilePoint
from opscale.model.shapes import ModelShape


def piece_work(
    shape: ModelShape, stage: Stage, piece: str, *, tokens: float, batch: float, length: float
) -> tuple[float, float]:
    """(FLOPs, bytes) of one piece for one layer (or the whole operator for embedding/lm_head)."""
    b = shape.dtype_bytes
    d, q, k = shape.hidden, shape.q_dim, shape.kv_dim
    t = tokens
    if piece == "rmsnorm":
        return 2 * 4 * t * d, 2 * (2 * t * d + d) * b
    if piece == "qkv_proj":
        n = q + 2 * k
        return 2 * t * d * n, (d * n + t * d + t * n) * b
    if piece == "o_proj":
        return 2 * t * q * d, (q * d + t * q + t * d) * b
    if piece == "attention_core":
        if stage is Stage.PREFILL:
            return 2 * batch * length * length * q, batch * length * (2 * q + 2 * k) * b
        return 4 * batch * length * q, (batch * length * 2 * k + 2 * batch * q) * b
    if piece == OperatorKind.EMBEDDING:
        return 0.0, 2 * t * d * b
    if piece == OperatorKind.FFN:
        return 6 * t * d * shape.ffn, (3 * d * shape.ffn + 2 * t * d) * b
    if piece == OperatorKind.EXPERTS:
        f_active = shape.top_k * shape.ffn + shape.shared_expert_ffn
        f_held = shape.experts * shape.ffn + shape.shared_expert_ffn
        return 6 * t * f_active * d, (3 * d * f_held + 2 * t * d) * b
    if piece == OperatorKind.LM_HEAD:
        v = shape.vocab
        return 2 * t * d * v, (v * d + t * d + 2 * t * v) * b
    raise ValueError(f"no work model for piece {piece!r}")


def roofline_time_s(flops: float, nbytes: float, gpu: GpuSpec) -> float:
    return max(flops / gpu.bf16_flops, nbytes / gpu.memory_bytes_s)


def is_compute_bound(flops: float, nbytes: float, gpu: GpuSpec) -> bool:
    """Arithmetic intensity against ``gpu``'s ridge point."""
    return flops > gpu.ridge_flops_per_byte * nbytes


def scale_factor(flops: float, nbytes: float, src: GpuSpec, dst: GpuSpec) -> float:
    return roofline_time_s(flops, nbytes, dst) / roofline_time_s(flops, nbytes, src)


def scale_watts(watts: float | None, src: GpuSpec, dst: GpuSpec) -> float | None:
    """Carry the busy fraction (W − idle) / (limit − idle) over to ``dst``'s idle and limit: a card that
    is as busy draws the same share of its power range (an assumption; no cross-card power data)."""
    if watts is None:
        return None
    frac = (watts - src.idle_watts) / (src.max_watts - src.idle_watts)
    frac = min(max(frac, 0.0), 1.0)
    return dst.idle_watts + frac * (dst.max_watts - dst.idle_watts)


def transfer_point(
    stage: Stage,
    kind: OperatorKind,
    p: ProfilePoint,
    src: tuple[ModelShape, GpuSpec],
    dst: tuple[ModelShape, GpuSpec],
) -> ProfilePoint:
    """Point ``p`` measured for the ``src`` (shape, card) carried over to ``dst``: each piece scaled by
    its roofline time there over here. Same shape, other card: ``scale_operator``; same card, other
    shape: ``opscale.model.estimate``."""
    batch = float(p.batch if p.batch is not None else p.x)
    length = float(p.seq_len or p.kv_len or 1)

    def t(side: tuple[ModelShape, GpuSpec], name: str) -> float:
        shape, gpu = side
        return roofline_time_s(*piece_work(shape, stage, name, tokens=p.x, batch=batch, length=length), gpu)

    # Composed points scale piece by piece: their pieces sit on different sides of the ridge (a decode
    # layer's GEMMs turn compute-bound at a few hundred tokens, its attention core never does).
    pieces = p.parts_ms or ((kind.value, p.latency_ms),)
    scaled = tuple((name, ms * (t(dst, name) / t(src, name))) for name, ms in pieces)
    # The measured total scales by its pieces' time-weighted factor (the stored pieces are rounded, so
    # their plain sum can differ from the total in the last digit).
    factor = sum(ms for _, ms in scaled) / sum(ms for _, ms in pieces)
    return ProfilePoint(
        x=p.x,
        latency_ms=p.latency_ms * factor,
        watts=scale_watts(p.watts, src[1], dst[1]),
        batch=p.batch,
        seq_len=p.seq_len,
        kv_len=p.kv_len,
        parts_ms=scaled if p.parts_ms else (),
        extrapolated=p.extrapolated,
    )


def scale_operator(op: OperatorProfile, shape: ModelShape, src: GpuSpec, dst: GpuSpec) -> OperatorProfile:
    """``op`` (measured on ``src`` for a model of ``shape``) as it would run on ``dst``."""
    return OperatorProfile(
        stage=op.stage,
        kind=op.kind,
        points=tuple(transfer_point(op.stage, op.kind, p, (shape, src), (shape, dst)) for p in op.points),
    )


def scale_profile(profile: ModelProfile, src: GpuSpec, dst: GpuSpec) -> ModelProfile:
    ops = tuple(scale_operator(op, profile.shape, src, dst) for op in profile.operators)
    scaled = profile.with_operators(ops, derived=f"roofline {src.key} -> {dst.key}")
    # Whole-layer references were measured on src; they do not carry over.
    return ModelProfile(
        model=scaled.model,
        gpu_type=dst.key,
        shape=scaled.shape,
        operators=scaled.operators,
        reference_layers=(),
        provenance=scaled.provenance,
    )
