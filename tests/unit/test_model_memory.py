"""The one memory model, and the property that ties it together: every replica a planner plans, placement
can place on its GPU type (they use the same rules)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscale.actuation import ResizePool
from opscale.model import get_gpu, get_preset
from opscale.model.memory import (
    PREFILL_CHUNK_TOKENS,
    USABLE_MEMORY_FRACTION,
    min_gpus,
    replica_memory,
    usable_bytes,
)
from opscale.model.operators import OperatorKind, activation_working_bytes, weights_bytes
from opscale.placement import GpuSlot, NodeInfo, PlacementInput, PoolDemand, Topology, place
from opscale.policy.model_level import plan_model
from opscale.policy.operator import plan_operator
from opscale.policy.types import SLO, LoadWindow
from opscale.services.placement.demand import replica_memory_per_gpu
from opscale.spec import parse_spec

H100 = get_gpu("h100")
LLAMA70 = get_preset("llama3-70b")
QWEN7 = get_preset("qwen2-7b")


def test_usable_share_is_ninety_percent() -> None:
    assert usable_bytes(H100.memory_bytes) == int(H100.memory_bytes * USABLE_MEMORY_FRACTION)


def test_attention_replica_claims_its_gpus_and_keeps_the_rest_for_kv() -> None:
    m = replica_memory(LLAMA70, H100, "decode", ("attention",), 64, 1)
    weights = weights_bytes(LLAMA70, OperatorKind.ATTENTION)
    act = activation_working_bytes(LLAMA70, OperatorKind.ATTENTION, 64)
    assert m.holder and m.per_gpu_bytes == usable_bytes(H100.memory_bytes)
    assert m.kv_capacity_bytes == usable_bytes(H100.memory_bytes) - weights - act
    # 70B: 80 layers · 2 · 8 KV heads · 128 · 2 B = 327,680 B per token.
    assert m.kv_tokens() == pytest.approx(m.kv_capacity_bytes / 327_680)


def test_more_gpus_than_kv_heads_replicates_kv() -> None:
    # qwen2-7b has 4 KV heads: on 8 GPUs each head sits on two, so a token costs twice the bytes.
    four = replica_memory(QWEN7, H100, "decode", ("attention",), 64, 4)
    eight = replica_memory(QWEN7, H100, "decode", ("attention",), 64, 8)
    assert eight.kv_bytes_per_token == 2 * four.kv_bytes_per_token == 2 * QWEN7.kv_bytes_per_token


def test_other_replicas_need_weights_and_one_pass_of_activations() -> None:
    m = replica_memory(LLAMA70, H100, "prefill", ("ffn",), 4, 2)
    weights = weights_bytes(LLAMA70, OperatorKind.FFN)
    act = activation_working_bytes(LLAMA70, OperatorKind.FFN, PREFILL_CHUNK_TOKENS)  # a chunk, not 4 prompts
    assert not m.holder and m.per_gpu_bytes == math.ceil((weights + act) / 2)
    assert m.fits
    # The 70B FFN (~113 GB of weights) does not fit one GPU.
    assert not replica_memory(LLAMA70, H100, "decode", ("ffn",), 1, 1).fits


def test_min_gpus_holds_the_kv_asked_for() -> None:
    ops = ("attention",)
    assert min_gpus(LLAMA70, H100, "decode", ops, 64) == 1
    one = replica_memory(LLAMA70, H100, "decode", ops, 64, 1).kv_tokens()
    assert min_gpus(LLAMA70, H100, "decode", ops, 64, kv_tokens=one + 1) == 2
    assert min_gpus(LLAMA70, H100, "decode", ops, 64, kv_tokens=1e12) is None


MODELS = ("llama3-70b", "mixtral-8x7b", "qwen2-7b", "qwen2-57b-a14b")
GPUS = ("H100", "H200", "A100-80G")


def _node(gpu: str, i: int) -> NodeInfo:
    spec = get_gpu(gpu)
    slots = tuple(GpuSlot(j, spec.key, spec.memory_bytes) for j in range(8))
    return NodeInfo(f"n{i}", slots, Topology(zone="z", s2="s2", s1="s1", s0=f"r{i}", nvlink_domain=f"n{i}"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    gpu=st.sampled_from(GPUS),
    rps=st.sampled_from((0.5, 4.0, 16.0, 40.0)),
    inp=st.sampled_from((128, 1024, 6000, 30000)),
    out=st.sampled_from((16, 256, 1000)),
    slo=st.sampled_from(((2000.0, 100.0), (1000.0, 50.0), (5000.0, 200.0))),
    planner=st.sampled_from(("operator", "model")),
)
def test_every_planned_replica_fits_placement(
    model: str, gpu: str, rps: float, inp: int, out: int, slo: tuple[float, float], planner: str
) -> None:
    """Across models × loads × SLOs × GPU types: each pool's replicas, with placement's demand per GPU
    (opscale/services/placement/demand.py, the same memory model), are placed on that GPU type in full."""
    from opscale.model import perf_model

    perf = perf_model(get_preset(model), gpu)
    load = LoadWindow(window_s=60, arrival_rate_rps=rps, input_tokens_mean=inp, output_tokens_mean=out)
    plan = (plan_operator if planner == "operator" else plan_model)(perf, load, SLO(*slo))
    spec = parse_spec(
        {
            "name": "d",
            "model": {"preset": model},
            "gpu_type": gpu,
            "policy": planner,
            "slo": {"ttft_ms": slo[0], "tbt_ms": slo[1]},
        }
    )
    demands = []
    for key, pp in plan.pools.items():
        req = ResizePool(key, pp.replicas, 0, pp.batch_size or 1, pp.gpus_per_replica, gpu)
        mem = replica_memory_per_gpu(spec, req, gpu)
        assert mem <= usable_bytes(get_gpu(gpu).memory_bytes), f"{key}: {mem} bytes per GPU"
        demands.append(
            PoolDemand(
                "d", key.stage, key.operator, pp.replicas, pp.gpus_per_replica, mem, 1.0, (get_gpu(gpu).key,)
            )
        )
    need = sum(d.replicas * d.gpus_per_replica for d in demands)
    nodes = tuple(_node(gpu, i) for i in range(need // 8 + 2))
    result = place(PlacementInput(nodes=nodes, current=(), demands=tuple(demands)))
    assert result.infeasible == (), result.infeasible
