from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_PREFILL: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
    STAGE_SERVING: _ClassVar[Stage]

class OperatorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_KIND_UNSPECIFIED: _ClassVar[OperatorKind]
    OPERATOR_KIND_EMBEDDING: _ClassVar[OperatorKind]
    OPERATOR_KIND_ATTENTION: _ClassVar[OperatorKind]
    OPERATOR_KIND_FFN: _ClassVar[OperatorKind]
    OPERATOR_KIND_EXPERTS: _ClassVar[OperatorKind]
    OPERATOR_KIND_LM_HEAD: _ClassVar[OperatorKind]
    OPERATOR_KIND_MODEL: _ClassVar[OperatorKind]
STAGE_UNSPECIFIED: Stage
STAGE_PREFILL: Stage
STAGE_DECODE: Stage
STAGE_SERVING: Stage
OPERATOR_KIND_UNSPECIFIED: OperatorKind
OPERATOR_KIND_EMBEDDING: OperatorKind
OPERATOR_KIND_ATTENTION: OperatorKind
OPERATOR_KIND_FFN: OperatorKind
OPERATOR_KIND_EXPERTS: OperatorKind
OPERATOR_KIND_LM_HEAD: OperatorKind
OPERATOR_KIND_MODEL: OperatorKind

class PoolKey(_message.Message):
    __slots__ = ("stage", "operator")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    operator: OperatorKind
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., operator: _Optional[_Union[OperatorKind, str]] = ...) -> None: ...

class PoolPlan(_message.Message):
    __slots__ = ("pool", "replicas", "batch_size", "gpus_per_replica", "draining_replicas", "gpu_type", "predicted_latency_ms", "predicted_watts", "gpu_share", "micro_batches")
    POOL_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    DRAINING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_WATTS_FIELD_NUMBER: _ClassVar[int]
    GPU_SHARE_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    pool: PoolKey
    replicas: int
    batch_size: int
    gpus_per_replica: int
    draining_replicas: int
    gpu_type: str
    predicted_latency_ms: float
    predicted_watts: float
    gpu_share: float
    micro_batches: int
    def __init__(self, pool: _Optional[_Union[PoolKey, _Mapping]] = ..., replicas: _Optional[int] = ..., batch_size: _Optional[int] = ..., gpus_per_replica: _Optional[int] = ..., draining_replicas: _Optional[int] = ..., gpu_type: _Optional[str] = ..., predicted_latency_ms: _Optional[float] = ..., predicted_watts: _Optional[float] = ..., gpu_share: _Optional[float] = ..., micro_batches: _Optional[int] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("ttft_ms", "tbt_ms", "gpus", "watts", "percentile")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    WATTS_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tbt_ms: float
    gpus: float
    watts: float
    percentile: float
    def __init__(self, ttft_ms: _Optional[float] = ..., tbt_ms: _Optional[float] = ..., gpus: _Optional[float] = ..., watts: _Optional[float] = ..., percentile: _Optional[float] = ...) -> None: ...

class Infeasibility(_message.Message):
    __slots__ = ("pool", "reason", "requested", "satisfiable")
    POOL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    SATISFIABLE_FIELD_NUMBER: _ClassVar[int]
    pool: PoolKey
    reason: str
    requested: int
    satisfiable: int
    def __init__(self, pool: _Optional[_Union[PoolKey, _Mapping]] = ..., reason: _Optional[str] = ..., requested: _Optional[int] = ..., satisfiable: _Optional[int] = ...) -> None: ...

class GpuTelemetry(_message.Message):
    __slots__ = ("index", "uuid", "utilization_fraction", "memory_used_bytes", "memory_total_bytes", "power_watts", "timestamp_ms")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    utilization_fraction: float
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float
    timestamp_ms: int
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., utilization_fraction: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., power_watts: _Optional[float] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class PageRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...
