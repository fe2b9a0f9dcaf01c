"""Decision service: proto <-> domain conversions (round-trip tested)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.errors import InvalidArgument
from opscale.spec import DeploymentSpec, PolicyKind, ServingMode, parse_spec
from services.common_convert import pool_from_pb, pool_to_pb
from services.decision.deployments import Deployment

MODE_TO_PB = {
    ServingMode.DISAGGREGATED: pb.SERVING_MODE_DISAGGREGATED,
    ServingMode.COLOCATED: pb.SERVING_MODE_COLOCATED,
}
MODE_FROM_PB = {v: k for k, v in MODE_TO_PB.items()}
POLICY_TO_PB = {
    PolicyKind.OPERATOR: pb.POLICY_KIND_OPERATOR,
    PolicyKind.MODEL: pb.POLICY_KIND_MODEL,
    PolicyKind.PD: pb.POLICY_KIND_PD,
    PolicyKind.UTILIZATION: pb.POLICY_KIND_UTILIZATION,
    PolicyKind.STATIC: pb.POLICY_KIND_STATIC,
}
POLICY_FROM_PB = {v: k for k, v in POLICY_TO_PB.items()}


def _present(msg: Message, names: tuple[str, ...]) -> dict[str, Any]:
    """The scalar fields of ``msg`` that were set (proto3 ``optional`` presence)."""
    return {n: getattr(msg, n) for n in names if msg.HasField(n)}


def _enum(value: int, table: Mapping[Any, Any], field: str, enum_type: Any) -> Any:
    if value == 0:
        return None  # unspecified: the spec's default applies
    if value not in table:
        raise InvalidArgument(f"{field}: {value} is not a known {enum_type.DESCRIPTOR.name}", field=field)
    return table[value]


def spec_from_pb(msg: pb.DeploymentSpec) -> DeploymentSpec:
    """Validate a proto spec; raises InvalidArgument naming the field (e.g. spec.slo.ttft_ms)."""
    data: dict[str, Any] = {"name": msg.name, "labels": dict(msg.labels)}
    source = msg.model.WhichOneof("source")
    model: dict[str, Any] = {"name": msg.model.name or None}
    if source == "preset":
        model["preset"] = msg.model.preset
    elif source == "hf_config_json":
        try:
            model["hf_config"] = json.loads(msg.model.hf_config_json)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"spec.model.hf_config_json is not JSON: {exc}", field="spec.model"
            ) from None
    data["model"] = model
    if msg.gpu_type:
        data["gpu_type"] = msg.gpu_type
    mode = _enum(msg.mode, MODE_FROM_PB, "spec.mode", pb.ServingMode)
    policy = _enum(msg.policy, POLICY_FROM_PB, "spec.policy", pb.PolicyKind)
    if mode is not None:
        data["mode"] = mode
    if policy is not None:
        data["policy"] = policy
    if msg.HasField("slo"):
        data["slo"] = {
            "ttft_ms": msg.slo.ttft_ms,
            "tbt_ms": msg.slo.tbt_ms,
            **_present(msg.slo, ("percentile",)),
        }
    data["limits"] = [
        {
            "pool": pool_from_pb(lim.pool, f"spec.limits.{i}.pool") if lim.HasField("pool") else None,
            "gpu_types": list(lim.gpu_types),
            **_present(lim, ("min_replicas", "max_replicas", "max_step")),
        }
        for i, lim in enumerate(msg.limits)
    ]
    if msg.HasField("stabilization"):
        data["stabilization"] = _present(
            msg.stabilization,
            (
                "scale_up_window_s",
                "scale_down_window_s",
                "scale_up_cooldown_s",
                "scale_down_cooldown_s",
                "max_staleness_s",
            ),
        )
    data["interval_s"] = msg.interval_s
    which = msg.WhichOneof("policy_params")
    if which == "operator_params":
        data["operator_params"] = _present(msg.operator_params, ("floor_fraction", "max_batch_size"))
    elif which == "pd_params":
        p = msg.pd_params
        data["pd_params"] = {
            "target_decode_tokens_per_s_per_instance": p.target_decode_tokens_per_s_per_instance,
            **_present(p, ("prefill_per_decode", "scale_out_threshold", "scale_in_threshold")),
        }
    elif which == "utilization_params":
        data["utilization_params"] = _present(msg.utilization_params, ("target_utilization",))
    elif which == "static_params":
        data["static_params"] = {
            "pools": [
                {
                    "pool": pool_from_pb(p.pool, f"spec.static_params.pools.{i}.pool"),
                    "replicas": p.replicas,
                    "gpus_per_replica": p.gpus_per_replica or 1,
                    "batch_size": p.batch_size or 64,
                }
                for i, p in enumerate(msg.static_params.pools)
            ]
        }
    data["launch"] = [
        {
            "pool": pool_from_pb(ref.pool, f"spec.launch.{i}.pool"),
            "template": ref.template,
            "args": dict(ref.args),
        }
        for i, ref in enumerate(msg.launch)
    ]
    return parse_spec(data)


def spec_to_pb(spec: DeploymentSpec) -> pb.DeploymentSpec:
    model = pb.ModelRef(name=spec.model.name or "")
    if spec.model.preset is not None:
        model.preset = spec.model.preset
    else:
        model.hf_config_json = json.dumps(spec.model.hf_config, sort_keys=True)
    st = spec.stabilization
    msg = pb.DeploymentSpec(
        name=spec.name,
        model=model,
        gpu_type=spec.gpu_type,
        mode=MODE_TO_PB[spec.mode],
        policy=POLICY_TO_PB[spec.policy],
        slo=pb.Slo(ttft_ms=spec.slo.ttft_ms, tbt_ms=spec.slo.tbt_ms, percentile=spec.slo.percentile),
        limits=[
            pb.PoolLimits(
                pool=pool_to_pb(lim.pool) if lim.pool is not None else None,
                min_replicas=lim.min_replicas,
                max_replicas=lim.max_replicas,
                max_step=lim.max_step,
                gpu_types=list(lim.gpu_types),
            )
            for lim in spec.limits
        ],
        stabilization=pb.Stabilization(
            scale_up_window_s=st.scale_up_window_s,
            scale_down_window_s=st.scale_down_window_s,
            scale_up_cooldown_s=st.scale_up_cooldown_s,
            scale_down_cooldown_s=st.scale_down_cooldown_s,
            max_staleness_s=st.max_staleness_s,
        ),
        interval_s=spec.interval_s,
        launch=[
            pb.LaunchTemplateRef(pool=pool_to_pb(r.pool), template=r.template, args=r.args)
            for r in spec.launch
        ],
        labels=spec.labels,
    )
    if spec.operator_params is not None:
        o = spec.operator_params
        msg.operator_params.CopyFrom(
            pb.OperatorPolicyParams(floor_fraction=o.floor_fraction, max_batch_size=o.max_batch_size)
        )
    if spec.pd_params is not None:
        p = spec.pd_params
        msg.pd_params.CopyFrom(
            pb.PdPolicyParams(
                target_decode_tokens_per_s_per_instance=p.target_decode_tokens_per_s_per_instance,
                prefill_per_decode=p.prefill_per_decode,
                scale_out_threshold=p.scale_out_threshold,
                scale_in_threshold=p.scale_in_threshold,
            )
        )
    if spec.utilization_params is not None:
        msg.utilization_params.target_utilization = spec.utilization_params.target_utilization
    if spec.static_params is not None:
        msg.static_params.CopyFrom(
            pb.StaticPolicyParams(
                pools=[
                    cpb.PoolPlan(
                        pool=pool_to_pb(p.pool),
                        replicas=p.replicas,
                        gpus_per_replica=p.gpus_per_replica,
                        batch_size=p.batch_size,
                    )
                    for p in spec.static_params.pools
                ]
            )
        )
    return msg


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def deployment_to_pb(deployment: Deployment) -> pb.Deployment:
    return pb.Deployment(
        spec=spec_to_pb(deployment.spec),
        version=deployment.version,
        frozen=deployment.frozen,
        created_at_ms=_ms(deployment.created_at),
        updated_at_ms=_ms(deployment.updated_at),
    )
