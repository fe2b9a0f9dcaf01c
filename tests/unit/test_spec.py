"""Deployment spec validation: every rejection names the field and the allowed range."""

from __future__ import annotations

from typing import Any

import pytest

from opscale.errors import InvalidArgument
from opscale.spec import DeploymentSpec, OperatorKind, PolicyKind, PoolRef, Stage, parse_spec
from tests.builders import spec_data


def test_minimal_spec_gets_defaults() -> None:
    s = parse_spec(spec_data())
    assert s.policy == PolicyKind.OPERATOR == "operator"
    assert s.slo.percentile == 99.0
    assert s.limits_for(PoolRef(stage=Stage.DECODE, operator=OperatorKind.ATTENTION)).max_replicas == 64


def test_round_trips_through_json() -> None:
    s = parse_spec(spec_data(policy="pd", pd_params={"target_decode_tokens_per_s_per_instance": 2000}))
    assert DeploymentSpec.model_validate(s.model_dump(mode="json")) == s


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"slo": {"ttft_ms": -1, "tbt_ms": 100}}, "spec.slo.ttft_ms", "greater than 0"),
        ({"slo": {"ttft_ms": 1, "tbt_ms": 0}}, "spec.slo.tbt_ms", "greater than 0"),
        ({"slo": {"ttft_ms": 1, "tbt_ms": 1, "percentile": 100}}, "spec.slo.percentile", "less than 100"),
        ({"slo": {"ttft_ms": 1, "tbt_ms": 1, "percentile": 0}}, "spec.slo.percentile", "greater than 0"),
        ({"limits": [{"max_replicas": 0}]}, "spec.limits.0.max_replicas", "greater than or equal to 1"),
        (
            {"limits": [{"min_replicas": 5, "max_replicas": 2}]},
            "spec.limits.0",
            "must not exceed max_replicas",
        ),
        ({"name": "Not_A_Label"}, "spec.name", "should match pattern"),
        ({"model": {}}, "spec.model", "exactly one of preset or hf_config"),
        (
            {"model": {"preset": "gpt-5"}},
            "spec.model",
            "unknown model preset 'gpt-5'; known presets: llama3-70b",
        ),
        ({"model": {"hf_config": {"hidden_size": 8}, "name": "m"}}, "spec.model", "missing required key"),
        ({"gpu_type": "tpu-v9"}, "spec.gpu_type", "unknown GPU type 'tpu-v9'; known types: a100-80g"),
        (
            {"limits": [{"gpu_types": ["h100", "v100"]}]},
            "spec.limits.0.gpu_types.1",
            "unknown GPU type 'v100'",
        ),
        ({"policy": "pd"}, "spec", "policy 'pd' needs its parameters: params (or pd_params)"),
        (
            {"policy": "bogus"},
            "spec.policy",
            "known policies: 'operator', 'model', 'pd', 'utilization', 'static'",
        ),
        ({"pd_params": {"target_decode_tokens_per_s_per_instance": 1}}, "spec", "does not apply to policy"),
        (
            {
                "policy": "pd",
                "mode": "colocated",
                "pd_params": {"target_decode_tokens_per_s_per_instance": 1},
            },
            "spec",
            "mode must be 'disaggregated'",
        ),
        (
            {"limits": [{"pool": {"stage": "serving", "operator": "attention"}}]},
            "spec",
            "mode 'disaggregated' allows prefill, decode",
        ),
        (
            {"limits": [{"max_replicas": 3}, {"max_replicas": 4}]},
            "spec",
            "limits are given twice for None",
        ),
        ({"unknown_field": 1}, "spec.unknown_field", "Extra inputs are not permitted"),
    ],
)
def test_rejections_name_the_field(overrides: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_spec(spec_data(**overrides))
    assert field in str(info.value)
    assert text in str(info.value)
