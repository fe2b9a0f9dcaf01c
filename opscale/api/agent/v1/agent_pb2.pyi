from opscale.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_ACCEPTED: _ClassVar[AckStatus]
    ACK_STATUS_REJECTED: _ClassVar[AckStatus]
    ACK_STATUS_FAILED: _ClassVar[AckStatus]

class ReplicaProcessState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_PROCESS_STATE_UNSPECIFIED: _ClassVar[ReplicaProcessState]
    REPLICA_PROCESS_STATE_STARTING: _ClassVar[ReplicaProcessState]
    REPLICA_PROCESS_STATE_READY: _ClassVar[ReplicaProcessState]
    REPLICA_PROCESS_STATE_DRAINING: _ClassVar[ReplicaProcessState]
    REPLICA_PROCESS_STATE_STOPPED: _ClassVar[ReplicaProcessState]
    REPLICA_PROCESS_STATE_CRASHED: _ClassVar[ReplicaProcessState]
    REPLICA_PROCESS_STATE_FAILED: _ClassVar[ReplicaProcessState]
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_ACCEPTED: AckStatus
ACK_STATUS_REJECTED: AckStatus
ACK_STATUS_FAILED: AckStatus
REPLICA_PROCESS_STATE_UNSPECIFIED: ReplicaProcessState
REPLICA_PROCESS_STATE_STARTING: ReplicaProcessState
REPLICA_PROCESS_STATE_READY: ReplicaProcessState
REPLICA_PROCESS_STATE_DRAINING: ReplicaProcessState
REPLICA_PROCESS_STATE_STOPPED: ReplicaProcessState
REPLICA_PROCESS_STATE_CRASHED: ReplicaProcessState
REPLICA_PROCESS_STATE_FAILED: ReplicaProcessState

class GpuInfo(_message.Message):
    __slots__ = ("index", "uuid", "gpu_type", "memory_bytes", "nvlink_domain")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NVLINK_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    gpu_type: str
    memory_bytes: int
    nvlink_domain: str
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., gpu_type: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., nvlink_domain: _Optional[str] = ...) -> None: ...

class RunningReplica(_message.Message):
    __slots__ = ("replica_id", "generation", "pid", "state")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    generation: int
    pid: int
    state: ReplicaProcessState
    def __init__(self, replica_id: _Optional[str] = ..., generation: _Optional[int] = ..., pid: _Optional[int] = ..., state: _Optional[_Union[ReplicaProcessState, str]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("node_name", "session_id", "gpus", "labels", "agent_version", "templates", "running", "last_seq")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    session_id: str
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    labels: _containers.ScalarMap[str, str]
    agent_version: str
    templates: _containers.RepeatedScalarFieldContainer[str]
    running: _containers.RepeatedCompositeFieldContainer[RunningReplica]
    last_seq: int
    def __init__(self, node_name: _Optional[str] = ..., session_id: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., agent_version: _Optional[str] = ..., templates: _Optional[_Iterable[str]] = ..., running: _Optional[_Iterable[_Union[RunningReplica, _Mapping]]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "timestamp_ms", "gpus")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    timestamp_ms: int
    gpus: _containers.RepeatedCompositeFieldContainer[_common_pb2.GpuTelemetry]
    def __init__(self, seq: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[_common_pb2.GpuTelemetry, _Mapping]]] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("command_id", "replica_id", "generation", "status", "message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    replica_id: str
    generation: int
    status: AckStatus
    message: str
    def __init__(self, command_id: _Optional[str] = ..., replica_id: _Optional[str] = ..., generation: _Optional[int] = ..., status: _Optional[_Union[AckStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica_id", "generation", "state", "pid", "restarts", "message", "endpoint", "timestamp_ms", "drained", "exit_code")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    generation: int
    state: ReplicaProcessState
    pid: int
    restarts: int
    message: str
    endpoint: str
    timestamp_ms: int
    drained: bool
    exit_code: int
    def __init__(self, replica_id: _Optional[str] = ..., generation: _Optional[int] = ..., state: _Optional[_Union[ReplicaProcessState, str]] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., message: _Optional[str] = ..., endpoint: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., drained: _Optional[bool] = ..., exit_code: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("register", "heartbeat", "ack", "status")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    ack: CommandAck
    status: ReplicaStatus
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., ack: _Optional[_Union[CommandAck, _Mapping]] = ..., status: _Optional[_Union[ReplicaStatus, _Mapping]] = ...) -> None: ...

class RegisterAck(_message.Message):
    __slots__ = ("node_name", "session_id", "heartbeat_interval_s", "stop_replica_ids", "lost_timeout_s")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    STOP_REPLICA_IDS_FIELD_NUMBER: _ClassVar[int]
    LOST_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    session_id: str
    heartbeat_interval_s: float
    stop_replica_ids: _containers.RepeatedScalarFieldContainer[str]
    lost_timeout_s: float
    def __init__(self, node_name: _Optional[str] = ..., session_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., stop_replica_ids: _Optional[_Iterable[str]] = ..., lost_timeout_s: _Optional[float] = ...) -> None: ...

class StartReplica(_message.Message):
    __slots__ = ("deployment", "pool", "template", "args", "gpu_indices", "env")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    pool: _common_pb2.PoolKey
    template: str
    args: _containers.ScalarMap[str, str]
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    env: _containers.ScalarMap[str, str]
    def __init__(self, deployment: _Optional[str] = ..., pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., template: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StopReplica(_message.Message):
    __slots__ = ("grace_s",)
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    grace_s: float
    def __init__(self, grace_s: _Optional[float] = ...) -> None: ...

class DrainReplica(_message.Message):
    __slots__ = ("grace_s",)
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    grace_s: float
    def __init__(self, grace_s: _Optional[float] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "idempotency_key", "replica_id", "generation", "trace_context", "start", "stop", "drain")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    idempotency_key: str
    replica_id: str
    generation: int
    trace_context: _containers.ScalarMap[str, str]
    start: StartReplica
    stop: StopReplica
    drain: DrainReplica
    def __init__(self, command_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., replica_id: _Optional[str] = ..., generation: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., start: _Optional[_Union[StartReplica, _Mapping]] = ..., stop: _Optional[_Union[StopReplica, _Mapping]] = ..., drain: _Optional[_Union[DrainReplica, _Mapping]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("register_ack", "command")
    REGISTER_ACK_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    register_ack: RegisterAck
    command: Command
    def __init__(self, register_ack: _Optional[_Union[RegisterAck, _Mapping]] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...
