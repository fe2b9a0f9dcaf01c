"""Spec conversions (opscale.wire.specs): proto -> domain -> proto is lossless, bad protos are named, and
every enum table covers every member both ways."""

from __future__ import annotations

import json

import pytest

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.errors import InvalidArgument
from opscale.wire.enums import ALL
from opscale.wire.specs import spec_from_pb, spec_to_pb

# A Mixtral-style HuggingFace config.json (the fields opscale reads).
MIXTRAL_CONFIG = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 32000,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}


def _pool(stage: int, op: int) -> cpb.PoolKey:
    return cpb.PoolKey(stage=stage, operator=op)


def full_spec() -> pb.DeploymentSpec:
    msg = pb.DeploymentSpec(
        name="mix",
        model=pb.ModelRef(hf_config_json=json.dumps(MIXTRAL_CONFIG, sort_keys=True), name="my-moe"),
        gpu_type="H200",
        mode=pb.SERVING_MODE_DISAGGREGATED,
        policy_name="pd",
        slo=pb.Slo(ttft_ms=1500, tbt_ms=80, percentile=95),
        limits=[
            pb.PoolLimits(
                pool=_pool(cpb.STAGE_DECODE, cpb.OPERATOR_KIND_MODEL),
                min_replicas=0,
                max_replicas=9,
                max_step=2,
                gpu_types=["H200", "H100"],
            ),
            pb.PoolLimits(min_replicas=1, max_replicas=5, max_step=0),
        ],
        stabilization=pb.Stabilization(
            scale_up_window_s=0,
            scale_down_window_s=120,
            scale_up_cooldown_s=5,
            scale_down_cooldown_s=60,
            max_staleness_s=8,
        ),
        interval_s=2,
        launch=[
            pb.LaunchTemplateRef(
                pool=_pool(cpb.STAGE_DECODE, cpb.OPERATOR_KIND_MODEL), template="vllm", args={"port": "8000"}
            )
        ],
        labels={"team": "search"},
    )
    msg.params.update(
        {
            "target_decode_tokens_per_s_per_instance": 1800,
            "prefill_per_decode": 0.5,
            "scale_out_threshold": 1.2,
            "scale_in_threshold": 0.6,
        }
    )
    return msg


def test_round_trip_is_lossless() -> None:
    msg = full_spec()
    domain = spec_from_pb(msg)
    assert spec_from_pb(spec_to_pb(domain)) == domain
    assert spec_to_pb(domain) == msg


def test_static_and_operator_params_round_trip() -> None:
    msg = pb.DeploymentSpec(
        name="s",
        model=pb.ModelRef(preset="llama3-8b"),
        policy_name="static",
        slo=pb.Slo(ttft_ms=1, tbt_ms=1),
    )
    msg.params.update(
        {"pools": [{"pool": "prefill/model", "replicas": 3, "gpus_per_replica": 2, "batch_size": 8}]}
    )
    domain = spec_from_pb(msg)
    assert domain.params["pools"][0]["pool"] == {"stage": "prefill", "operator": "model"}
    assert spec_from_pb(spec_to_pb(domain)) == domain
    op_msg = pb.DeploymentSpec(
        name="o", model=pb.ModelRef(preset="llama3-8b"), slo=pb.Slo(ttft_ms=1, tbt_ms=1)
    )
    op_msg.params.update({"floor_fraction": 0.25, "max_batch_size": 64})
    op = spec_from_pb(op_msg)
    assert op.policy == "operator"
    assert op.params["floor_fraction"] == 0.25 and op.params["max_batch_size"] == 64
    assert op.params["forms"] == "hybrid"  # defaults are stored with the spec
    assert spec_from_pb(spec_to_pb(op)) == op


def test_explicit_zero_is_validated_not_defaulted() -> None:
    msg = full_spec()
    msg.limits[1].max_replicas = 0
    with pytest.raises(InvalidArgument, match=r"spec\.limits\.1\.max_replicas"):
        spec_from_pb(msg)


def test_unset_optional_takes_the_default() -> None:
    msg = full_spec()
    msg.slo.ClearField("percentile")
    assert spec_from_pb(msg).slo.percentile == 99.0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: setattr(m, "policy_name", "bogus"), "spec.policy"),
        (lambda m: m.params.update({"prefill_per_decode": -1}), "spec.params"),
        (lambda m: setattr(m, "mode", 7), "spec.mode"),
        (lambda m: m.limits[0].pool.__setattr__("stage", 42), "spec.limits.0.pool.stage"),
        (lambda m: m.model.__setattr__("hf_config_json", "{not json"), "spec.model"),
        (lambda m: m.ClearField("slo"), "spec.slo"),
    ],
)
def test_malformed_protos_name_the_field(mutate: object, field: str) -> None:
    msg = full_spec()
    mutate(msg)  # type: ignore[operator]
    with pytest.raises(InvalidArgument) as info:
        spec_from_pb(msg)
    assert field in str(info.value)


@pytest.mark.parametrize("table", ALL, ids=lambda t: t.prefix)
def test_every_enum_member_maps_both_ways(table: object) -> None:
    for member in table.domain:  # type: ignore[attr-defined]
        assert table.from_pb(table.to_pb(member), "f") is member  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="f: 0 is not one of"):
        table.from_pb(0, "f")  # type: ignore[attr-defined]
