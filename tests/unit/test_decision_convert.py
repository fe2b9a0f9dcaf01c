"""Decision service conversions: proto -> domain -> proto is lossless, and bad protos are named."""

from __future__ import annotations

import json

import pytest

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.errors import InvalidArgument
from services.decision.convert import spec_from_pb, spec_to_pb

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
    return pb.DeploymentSpec(
        name="mix",
        model=pb.ModelRef(hf_config_json=json.dumps(MIXTRAL_CONFIG, sort_keys=True), name="my-moe"),
        gpu_type="H200",
        mode=pb.SERVING_MODE_DISAGGREGATED,
        policy=pb.POLICY_KIND_PD,
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
        pd_params=pb.PdPolicyParams(
            target_decode_tokens_per_s_per_instance=1800,
            prefill_per_decode=0.5,
            scale_out_threshold=1.2,
            scale_in_threshold=0.6,
        ),
        launch=[
            pb.LaunchTemplateRef(
                pool=_pool(cpb.STAGE_DECODE, cpb.OPERATOR_KIND_MODEL), template="vllm", args={"port": "8000"}
            )
        ],
        labels={"team": "search"},
    )


def test_round_trip_is_lossless() -> None:
    msg = full_spec()
    domain = spec_from_pb(msg)
    assert spec_from_pb(spec_to_pb(domain)) == domain
    assert spec_to_pb(domain) == msg


def test_static_and_operator_params_round_trip() -> None:
    msg = pb.DeploymentSpec(
        name="s",
        model=pb.ModelRef(preset="llama3-8b"),
        policy=pb.POLICY_KIND_STATIC,
        slo=pb.Slo(ttft_ms=1, tbt_ms=1),
        static_params=pb.StaticPolicyParams(
            pools=[
                cpb.PoolPlan(
                    pool=_pool(cpb.STAGE_PREFILL, cpb.OPERATOR_KIND_MODEL),
                    replicas=3,
                    gpus_per_replica=2,
                    batch_size=8,
                )
            ]
        ),
    )
    domain = spec_from_pb(msg)
    assert spec_from_pb(spec_to_pb(domain)) == domain
    op = spec_from_pb(
        pb.DeploymentSpec(
            name="o",
            model=pb.ModelRef(preset="llama3-8b"),
            slo=pb.Slo(ttft_ms=1, tbt_ms=1),
            operator_params=pb.OperatorPolicyParams(floor_fraction=0.25),
        )
    )
    assert op.operator_params is not None and op.operator_params.floor_fraction == 0.25
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
        (lambda m: setattr(m, "policy", 99), "spec.policy"),
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
