"""Deployment specs between ``opscale.spec.DeploymentSpec`` and ``opscale.api.decision.v1``.

A policy travels as its registered name and its parameters as a ``google.protobuf.Struct`` in the
spec's own JSON form, so a new policy needs nothing here: ``parse_spec`` validates the parameters
against the policy's descriptor, like a YAML spec. (A struct's numbers are doubles; pydantic takes
``256.0`` for an integer field and rejects ``256.5``, so nothing is lost.)
"""

from __future__ import annotations

import json
from datetime import datetime

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.decisions.deployment import Deployment
from opscale.errors import InvalidArgument
from opscale.spec import DeploymentSpec, parse_spec
from opscale.wire.enums import MODE
from opscale.wire.pools import pool_to_pb
from opscale.wire.spec_document import spec_document
from opscale.wire.validate import MAX_SPEC_BYTES


def spec_from_pb(msg: pb.DeploymentSpec) -> DeploymentSpec:
    """Validate a proto spec; raises ``InvalidArgument`` naming the field (e.g. ``spec.slo.ttft_ms``)."""
    size = msg.ByteSize()
    if size > MAX_SPEC_BYTES:
        raise InvalidArgument(
            f"spec is {size} bytes; at most {MAX_SPEC_BYTES} (docs/spec.md): a large hf_config belongs in a "
            "preset",
            field="spec",
        )
    return parse_spec(spec_document(msg))


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
        mode=MODE.to_pb(spec.mode),  # type: ignore[arg-type]
        policy_name=spec.policy,
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
    if spec.params:
        msg.params.update(spec.params)
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
