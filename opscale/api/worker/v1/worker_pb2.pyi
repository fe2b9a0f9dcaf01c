from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_READY: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]
    WORKER_STATE_DRAINED: _ClassVar[WorkerState]
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_READY: WorkerState
WORKER_STATE_DRAINING: WorkerState
WORKER_STATE_DRAINED: WorkerState

class ExecuteBatchRequest(_message.Message):
    __slots__ = ("request_id", "batch_size", "length_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    batch_size: int
    length_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., batch_size: _Optional[int] = ..., length_tokens: _Optional[int] = ...) -> None: ...

class ExecuteBatchResponse(_message.Message):
    __slots__ = ("request_id", "replica_id", "service_time_ms", "queued_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    replica_id: str
    service_time_ms: float
    queued_ms: float
    def __init__(self, request_id: _Optional[str] = ..., replica_id: _Optional[str] = ..., service_time_ms: _Optional[float] = ..., queued_ms: _Optional[float] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("grace_s",)
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    grace_s: float
    def __init__(self, grace_s: _Optional[float] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("state", "in_flight")
    STATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    state: WorkerState
    in_flight: int
    def __init__(self, state: _Optional[_Union[WorkerState, str]] = ..., in_flight: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("replica_id", "deployment", "stage", "operator", "state", "in_flight", "batches_done", "gpu_indices", "pid")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    BATCHES_DONE_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    deployment: str
    stage: str
    operator: str
    state: WorkerState
    in_flight: int
    batches_done: int
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    pid: int
    def __init__(self, replica_id: _Optional[str] = ..., deployment: _Optional[str] = ..., stage: _Optional[str] = ..., operator: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ..., in_flight: _Optional[int] = ..., batches_done: _Optional[int] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., pid: _Optional[int] = ...) -> None: ...
