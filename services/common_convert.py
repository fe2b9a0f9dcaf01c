"""Conversions shared by every service: common enums and pool keys, proto <-> domain."""

from __future__ import annotations

from opscale.api.common.v1 import common_pb2 as pb
from opscale.errors import InvalidArgument
from opscale.spec import OperatorKind, PoolRef, Stage

STAGE_TO_PB = {
    Stage.PREFILL: pb.STAGE_PREFILL,
    Stage.DECODE: pb.STAGE_DECODE,
    Stage.SERVING: pb.STAGE_SERVING,
}
STAGE_FROM_PB = {v: k for k, v in STAGE_TO_PB.items()}

OPERATOR_TO_PB = {
    OperatorKind.EMBEDDING: pb.OPERATOR_KIND_EMBEDDING,
    OperatorKind.ATTENTION: pb.OPERATOR_KIND_ATTENTION,
    OperatorKind.FFN: pb.OPERATOR_KIND_FFN,
    OperatorKind.EXPERTS: pb.OPERATOR_KIND_EXPERTS,
    OperatorKind.LM_HEAD: pb.OPERATOR_KIND_LM_HEAD,
    OperatorKind.MODEL: pb.OPERATOR_KIND_MODEL,
}
OPERATOR_FROM_PB = {v: k for k, v in OPERATOR_TO_PB.items()}


def stage_from_pb(value: int, field: str) -> Stage:
    try:
        return STAGE_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        allowed = ", ".join(pb.Stage.Name(v) for v in STAGE_FROM_PB)
        raise InvalidArgument(f"{field}: stage {value} is not one of {allowed}", field=field) from None


def operator_from_pb(value: int, field: str) -> OperatorKind:
    try:
        return OPERATOR_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        allowed = ", ".join(pb.OperatorKind.Name(v) for v in OPERATOR_FROM_PB)
        raise InvalidArgument(f"{field}: operator {value} is not one of {allowed}", field=field) from None


def pool_from_pb(msg: pb.PoolKey, field: str) -> PoolRef:
    return PoolRef(
        stage=stage_from_pb(msg.stage, f"{field}.stage"),
        operator=operator_from_pb(msg.operator, f"{field}.operator"),
    )


def pool_to_pb(pool: PoolRef) -> pb.PoolKey:
    return pb.PoolKey(stage=STAGE_TO_PB[pool.stage], operator=OPERATOR_TO_PB[pool.operator])


def require_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > 253:
        raise InvalidArgument(f"{field} is {len(value)} characters; at most 253", field=field)
    return value
