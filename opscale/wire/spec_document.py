"""A proto ``DeploymentSpec`` as the document ``apply -f`` takes (plain YAML-able data, not validated):
what ``spec_from_pb`` validates, what ``describe`` prints, and how a spec printed by ``get -o yaml``
(proto field names, enum names) is read back. Light on purpose: no pydantic model, no policy layer."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.errors import InvalidArgument
from opscale.wire.enums import MODE
from opscale.wire.pools import pool_from_pb


def _present(msg: Message, names: tuple[str, ...]) -> dict[str, Any]:
    """The scalar fields of ``msg`` that were set (proto3 ``optional`` presence)."""
    return {n: getattr(msg, n) for n in names if msg.HasField(n)}


def _pool(msg: Any, field: str) -> dict[str, str]:
    key = pool_from_pb(msg, field)
    return {"stage": str(key.stage), "operator": str(key.operator)}


def spec_document(msg: pb.DeploymentSpec) -> dict[str, Any]:
    """The spec's fields as ``apply -f`` names them; an enum the proto has no value for, or a model
    config that is not JSON, raises ``InvalidArgument`` naming the field."""
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
    mode = MODE.from_pb_or_none(msg.mode, "spec.mode")
    if mode is not None:
        data["mode"] = str(mode.value)
    if msg.policy_name:
        data["policy"] = msg.policy_name
    if msg.HasField("slo"):
        data["slo"] = {
            "ttft_ms": msg.slo.ttft_ms,
            "tbt_ms": msg.slo.tbt_ms,
            **_present(msg.slo, ("percentile",)),
        }
    data["limits"] = [
        {
            "pool": _pool(lim.pool, f"spec.limits.{i}.pool") if lim.HasField("pool") else None,
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
    if msg.HasField("params"):
        data["params"] = json_format.MessageToDict(msg.params)
    data["launch"] = [
        {"pool": _pool(ref.pool, f"spec.launch.{i}.pool"), "template": ref.template, "args": dict(ref.args)}
        for i, ref in enumerate(msg.launch)
    ]
    return data


def printed_spec(document: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The apply document inside what ``get deployments -o yaml/json`` or ``describe deployment -o
    yaml/json`` printed (a Deployment with proto field names and enum names), or None when
    ``document`` is a spec written by hand."""
    printed = document.get("deployment", document)
    if not (isinstance(printed, dict) and isinstance(printed.get("spec"), dict) and "version" in printed):
        return None
    try:
        msg = json_format.ParseDict(printed["spec"], pb.DeploymentSpec())
    except json_format.ParseError as exc:
        raise InvalidArgument(f"{where}: spec: {' '.join(str(exc).split())}", field="spec") from None
    return spec_document(msg)
