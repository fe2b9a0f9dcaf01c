"""Roofline scaling from the profiled H100 to other GPU types."""

from __future__ import annotations

import pytest

from opscale.errors import InvalidArgument
from opscale.model.gpus import get_gpu
from opscale.model.operators import OperatorKind, Stage
from opscale.model.perf import PerfModel
from opscale.model.profiles import load_profile, packaged_profiles
from opscale.model.roofline import is_compute_bound, piece_work, scale_factor, scale_profile
from opscale.model.shapes import ModelShape, get_preset

H100 = get_gpu("h100")
H200 = get_gpu("h200")
A100 = get_gpu("a100-80g")


def _pieces_bound(profile_model: str, stage: Stage, kind: OperatorKind) -> list[tuple[int, bool]]:
    """(point index, every piece memory-bound on both cards) for one operator."""
    profile = load_profile(profile_model, "h100")
    out = []
    for i, p in enumerate(profile.operator(stage, kind).points):
        batch = float(p.batch or p.x)
        length = float(p.seq_len or p.kv_len or 1)
        memory = True
        for name, _ in p.parts_ms or ((kind.value, p.latency_ms),):
            f, q = piece_work(profile.shape, stage, name, tokens=p.x, batch=batch, length=length)
            memory &= not is_compute_bound(f, q, H100) and not is_compute_bound(f, q, H200)
        out.append((i, memory))
    return out


def test_h100_to_h100_is_identity() -> None:
    for profile in packaged_profiles():
        scaled = scale_profile(profile, H100, H100)
        for before, after in zip(profile.operators, scaled.operators, strict=True):
            for p, q in zip(before.points, after.points, strict=True):
                # Latency is exact (every factor is max(a, b) / max(a, b) = 1.0); watts go through
                # idle + fraction · range and come back within rounding.
                assert q.latency_ms == p.latency_ms and q.parts_ms == p.parts_ms
                assert q.watts == (None if p.watts is None else pytest.approx(p.watts, rel=1e-12))


def test_h100_to_h200_memory_bound_decode_scales_by_bandwidth_ratio() -> None:
    # H200 / H100 bandwidth: 4.8 / 3.35 TB/s (datasheets), so memory-bound times shrink by 3.35/4.8 = 0.698.
    ratio = 3.35 / 4.8
    src = load_profile("llama3-8b", "h100")
    dst = scale_profile(src, H100, H200)
    checked = 0
    for stage, kind in [(Stage.DECODE, OperatorKind.ATTENTION), (Stage.DECODE, OperatorKind.FFN)]:
        before = src.operator(stage, kind).points
        after = dst.operator(stage, kind).points
        for i, memory_bound in _pieces_bound("llama3-8b", stage, kind):
            if memory_bound:
                assert after[i].latency_ms == pytest.approx(before[i].latency_ms * ratio, rel=1e-9)
                checked += 1
    # 42 of 53 decode attention points (at batch ≥ 256 the QKV GEMM passes the H200's ridge of ~225 FLOP/B)
    # and the MLP's 8 points up to 128 tokens.
    assert checked == 50


def test_compute_bound_prefill_scales_by_flops_ratio() -> None:
    # llama3-8b MLP at 8192 tokens: I = 6·T·d·f / ((3·d·f + 2·T·d)·2) ≈ 1,990 FLOP/B, far above both ridges
    # (H100 322, A100 167), so the time grows by the FLOP/s ratio 989.5 / 312 = 3.17.
    shape = get_preset("llama3-8b")
    f, q = piece_work(shape, Stage.PREFILL, "ffn", tokens=8192, batch=8192, length=1)
    assert is_compute_bound(f, q, H100) and is_compute_bound(f, q, A100)
    assert scale_factor(f, q, H100, A100) == pytest.approx(989.5 / 312, rel=1e-9)


def test_regime_change_is_continuous() -> None:
    # H20 (ridge ≈ 40 FLOP/B) vs H100 (≈ 322): an intensity of 100 is compute-bound on the H20 only.
    # Then the factor is (F/P_h20) / (Q/W_h100), between the bandwidth and FLOP/s ratios.
    h20 = get_gpu("h20")
    f, q = 100.0e9, 1.0e9
    factor = scale_factor(f, q, H100, h20)
    bw_ratio = H100.memory_bytes_s / h20.memory_bytes_s
    flops_ratio = H100.bf16_flops / h20.bf16_flops
    assert bw_ratio < factor < flops_ratio
    assert factor == pytest.approx((f / h20.bf16_flops) / (q / H100.memory_bytes_s))


def test_scaled_watts_keep_the_busy_fraction() -> None:
    src = load_profile("llama3-8b", "h100")
    dst = scale_profile(src, H100, A100)
    p_src = next(p for p in src.operator(Stage.DECODE, OperatorKind.FFN).points if p.watts)
    p_dst = next(p for p in dst.operator(Stage.DECODE, OperatorKind.FFN).points if p.x == p_src.x)
    assert p_src.watts is not None and p_dst.watts is not None
    frac = (p_src.watts - H100.idle_watts) / (H100.max_watts - H100.idle_watts)
    assert p_dst.watts == pytest.approx(A100.idle_watts + frac * (A100.max_watts - A100.idle_watts))
    assert dst.gpu_type == "a100-80g" and dst.provenance.derived == "roofline h100 -> a100-80g"


def test_perf_model_on_unprofiled_gpu_says_it_scaled() -> None:
    pm = PerfModel(get_preset("llama3-8b"), "H200")
    assert pm.sources[(Stage.DECODE, OperatorKind.ATTENTION)] == "roofline h100 -> h200 from llama3-8b"
    h100 = PerfModel(get_preset("llama3-8b"), "h100")
    # Decode attention at batch 16, KV 4096: every piece is memory-bound, so exactly the bandwidth ratio.
    assert pm.pass_latency_ms("decode", "attention", 16, 4096) == pytest.approx(
        h100.pass_latency_ms("decode", "attention", 16, 4096) * 3.35 / 4.8, rel=1e-9
    )


def test_shape_without_any_matching_profile_is_refused() -> None:
    odd = ModelShape("odd", layers=4, hidden=1024, heads=8, kv_heads=8, head_dim=128, ffn=4096, vocab=1000)
    with pytest.raises(InvalidArgument, match=r"no profile for the embedding operator of 'odd'"):
        PerfModel(odd, "h100")


def test_other_model_with_same_operator_dimensions_borrows_them() -> None:
    # A 16-layer Llama-3-8B variant: every operator has llama3-8b's dimensions; only the layer count differs.
    small = ModelShape("llama3-8b-16l", layers=16, hidden=4096, heads=32, kv_heads=8, head_dim=128,
                       ffn=14336, vocab=128256)  # fmt: skip
    pm = PerfModel(small, "h100")
    full = PerfModel(get_preset("llama3-8b"), "h100")
    assert pm.sources[(Stage.PREFILL, OperatorKind.FFN)] == "measured on h100 (llama3-8b)"
    assert pm.pass_latency_ms("prefill", "ffn", 2, 512) == pytest.approx(
        full.pass_latency_ms("prefill", "ffn", 2, 512) / 2
    )
