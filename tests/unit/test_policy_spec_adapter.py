"""spec → policy setup: every registered policy, limits, stabilization, SLO and pools."""

from __future__ import annotations

from typing import Any

import pytest

from opscale.errors import InvalidArgument
from opscale.policy import registry
from opscale.policy.model_level import ModelPolicy
from opscale.policy.operator import OperatorPolicy
from opscale.policy.pd import PdPolicy
from opscale.policy.spec_adapter import policy_setup, setup_for
from opscale.policy.static import StaticPolicy
from opscale.policy.types import SLO, PoolKey, PoolLimits
from opscale.policy.utilization import UtilizationPolicy
from opscale.spec import parse_spec
from tests.builders import spec_data as _spec_data


def spec_data(**overrides: Any) -> dict[str, Any]:
    """The shared minimal spec at p95 (this file checks the percentile reaches the SLO)."""
    return _spec_data(**{"slo": {"ttft_ms": 2000, "tbt_ms": 100, "percentile": 95}, **overrides})


def test_operator_setup_maps_slo_limits_and_pools() -> None:
    s = parse_spec(
        spec_data(
            limits=[
                {"max_replicas": 32, "max_step": 4},
                {
                    "pool": {"stage": "decode", "operator": "attention"},
                    "min_replicas": 2,
                    "max_replicas": 10,
                    "max_step": 2,
                },
            ],
            stabilization={"scale_down_window_s": 120},
            operator_params={"floor_fraction": 0.25, "max_batch_size": 64},
            interval_s=2,
        )
    )
    setup = policy_setup(s)
    assert isinstance(setup.policy, OperatorPolicy)
    assert setup.policy.perf.shape.name == "llama3-70b" and setup.policy.perf.gpu.key == "h100"
    assert setup.slo == SLO(2000.0, 100.0, 95.0)
    assert setup.limits.for_pool(PoolKey("decode", "attention")) == PoolLimits(2, 10)
    assert setup.limits.for_pool(PoolKey("decode", "ffn")) == PoolLimits(0, 32)
    assert setup.limits.max_step_abs == 2  # the smallest non-zero per-entry max_step
    assert setup.limits.scale_down_window_s == 120.0 and setup.limits.scale_down_cooldown_s == 30.0
    assert setup.limits.max_staleness_s == 10.0
    assert setup.policy.interval_s == 2.0
    assert setup.params["floor_fraction"] == 0.25 and setup.params["max_batch_size"] == 64
    assert setup.pools == (
        *(
            PoolKey(st, op)
            for st in ("prefill", "decode")
            for op in ("embedding", "attention", "ffn", "lm_head")
        ),
        PoolKey("prefill", "model"),
        PoolKey("decode", "model"),
    )


def test_defaults_without_limits() -> None:
    setup = policy_setup(parse_spec(spec_data(model={"preset": "mixtral-8x7b"})))
    assert setup.limits.default_pool == PoolLimits(0, 64) and setup.limits.max_step_abs is None
    assert setup.policy.interval_s == 1.0
    assert PoolKey("decode", "experts") in setup.pools


def test_model_setup() -> None:
    setup = policy_setup(parse_spec(spec_data(policy="model")))
    assert isinstance(setup.policy, ModelPolicy) and setup.policy.interval_s == 20.0
    assert setup.pools == (PoolKey("prefill", "model"), PoolKey("decode", "model"))


def test_pd_setup_maps_its_parameters() -> None:
    setup = policy_setup(
        parse_spec(
            spec_data(
                policy="pd",
                pd_params={"target_decode_tokens_per_s_per_instance": 2000, "prefill_per_decode": 0.25},
            )
        )
    )
    assert isinstance(setup.policy, PdPolicy)
    assert setup.policy.params.target_decode_tps == 2000.0
    assert setup.policy.params.prefill_per_decode == 0.25
    assert setup.pools == (PoolKey("prefill", "model"), PoolKey("decode", "model"))


def test_utilization_setup() -> None:
    setup = policy_setup(
        parse_spec(
            spec_data(policy="utilization", mode="colocated", utilization_params={"target_utilization": 0.5})
        )
    )
    assert isinstance(setup.policy, UtilizationPolicy)
    assert setup.policy.params.target == 0.5 and setup.policy.params.pools == ["serving/model"]
    assert setup.pools == (PoolKey("serving", "model"),)


def test_static_setup() -> None:
    setup = policy_setup(
        parse_spec(
            spec_data(
                policy="static",
                static_params={
                    "pools": [
                        {
                            "pool": {"stage": "decode", "operator": "model"},
                            "replicas": 3,
                            "gpus_per_replica": 4,
                        }
                    ]
                },
            )
        )
    )
    assert isinstance(setup.policy, StaticPolicy)
    plan = setup.policy.plans[PoolKey("decode", "model")]
    assert (plan.replicas, plan.gpus_per_replica, plan.batch_size) == (3, 4, 64)
    assert setup.pools == (PoolKey("decode", "model"),)


@pytest.mark.parametrize("kind", registry.names())
def test_every_kind_builds_or_says_what_is_missing(kind: str) -> None:
    s = parse_spec(spec_data())
    if registry.descriptor(kind).params_required:
        with pytest.raises(InvalidArgument, match=f"policy '{kind}' needs"):
            setup_for(s, kind)
    else:
        setup = setup_for(s, kind)
        assert setup.policy.name == kind and setup.pools


def test_colocated_operator_pools_are_serving_pools() -> None:
    setup = policy_setup(parse_spec(spec_data(mode="colocated")))
    assert {p.stage for p in setup.pools} == {"serving"}
