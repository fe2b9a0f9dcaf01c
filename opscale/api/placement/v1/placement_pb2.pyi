from opscale.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATUS_UNSPECIFIED: _ClassVar[NodeStatus]
    NODE_STATUS_REGISTERING: _ClassVar[NodeStatus]
    NODE_STATUS_READY: _ClassVar[NodeStatus]
    NODE_STATUS_CORDONED: _ClassVar[NodeStatus]
    NODE_STATUS_DRAINING: _ClassVar[NodeStatus]
    NODE_STATUS_LOST: _ClassVar[NodeStatus]
    NODE_STATUS_DECOMMISSIONED: _ClassVar[NodeStatus]

class ReplicaDesiredState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_DESIRED_STATE_UNSPECIFIED: _ClassVar[ReplicaDesiredState]
    REPLICA_DESIRED_STATE_RUNNING: _ClassVar[ReplicaDesiredState]
    REPLICA_DESIRED_STATE_DRAINING: _ClassVar[ReplicaDesiredState]
    REPLICA_DESIRED_STATE_STOPPED: _ClassVar[ReplicaDesiredState]

class ReplicaObservedState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_OBSERVED_STATE_UNSPECIFIED: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_PENDING: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_STARTING: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_READY: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_DRAINING: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_STOPPED: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_FAILED: _ClassVar[ReplicaObservedState]
    REPLICA_OBSERVED_STATE_LOST: _ClassVar[ReplicaObservedState]
NODE_STATUS_UNSPECIFIED: NodeStatus
NODE_STATUS_REGISTERING: NodeStatus
NODE_STATUS_READY: NodeStatus
NODE_STATUS_CORDONED: NodeStatus
NODE_STATUS_DRAINING: NodeStatus
NODE_STATUS_LOST: NodeStatus
NODE_STATUS_DECOMMISSIONED: NodeStatus
REPLICA_DESIRED_STATE_UNSPECIFIED: ReplicaDesiredState
REPLICA_DESIRED_STATE_RUNNING: ReplicaDesiredState
REPLICA_DESIRED_STATE_DRAINING: ReplicaDesiredState
REPLICA_DESIRED_STATE_STOPPED: ReplicaDesiredState
REPLICA_OBSERVED_STATE_UNSPECIFIED: ReplicaObservedState
REPLICA_OBSERVED_STATE_PENDING: ReplicaObservedState
REPLICA_OBSERVED_STATE_STARTING: ReplicaObservedState
REPLICA_OBSERVED_STATE_READY: ReplicaObservedState
REPLICA_OBSERVED_STATE_DRAINING: ReplicaObservedState
REPLICA_OBSERVED_STATE_STOPPED: ReplicaObservedState
REPLICA_OBSERVED_STATE_FAILED: ReplicaObservedState
REPLICA_OBSERVED_STATE_LOST: ReplicaObservedState

class Topology(_message.Message):
    __slots__ = ("zone", "s2", "s1", "s0", "nvlink_domain")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    S2_FIELD_NUMBER: _ClassVar[int]
    S1_FIELD_NUMBER: _ClassVar[int]
    S0_FIELD_NUMBER: _ClassVar[int]
    NVLINK_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    zone: str
    s2: str
    s1: str
    s0: str
    nvlink_domain: str
    def __init__(self, zone: _Optional[str] = ..., s2: _Optional[str] = ..., s1: _Optional[str] = ..., s0: _Optional[str] = ..., nvlink_domain: _Optional[str] = ...) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("node", "index", "uuid", "gpu_type", "memory_bytes", "nvlink_domain", "replica_ids", "telemetry")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NVLINK_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REPLICA_IDS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    node: str
    index: int
    uuid: str
    gpu_type: str
    memory_bytes: int
    nvlink_domain: str
    replica_ids: _containers.RepeatedScalarFieldContainer[str]
    telemetry: _common_pb2.GpuTelemetry
    def __init__(self, node: _Optional[str] = ..., index: _Optional[int] = ..., uuid: _Optional[str] = ..., gpu_type: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., nvlink_domain: _Optional[str] = ..., replica_ids: _Optional[_Iterable[str]] = ..., telemetry: _Optional[_Union[_common_pb2.GpuTelemetry, _Mapping]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "status", "topology", "labels", "gpus", "last_heartbeat_ms", "registered_at_ms", "version", "agent_version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: NodeStatus
    topology: Topology
    labels: _containers.ScalarMap[str, str]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    last_heartbeat_ms: int
    registered_at_ms: int
    version: int
    agent_version: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[NodeStatus, str]] = ..., topology: _Optional[_Union[Topology, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., last_heartbeat_ms: _Optional[int] = ..., registered_at_ms: _Optional[int] = ..., version: _Optional[int] = ..., agent_version: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class ListGpusRequest(_message.Message):
    __slots__ = ("node", "gpu_type", "page")
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    gpu_type: str
    page: _common_pb2.PageRequest
    def __init__(self, node: _Optional[str] = ..., gpu_type: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListGpusResponse(_message.Message):
    __slots__ = ("gpus", "next_page_token")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    next_page_token: str
    def __init__(self, gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CordonNodeRequest(_message.Message):
    __slots__ = ("name", "reason", "actor", "expected_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    actor: str
    expected_version: int
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class CordonNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class UncordonNodeRequest(_message.Message):
    __slots__ = ("name", "actor", "expected_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    actor: str
    expected_version: int
    def __init__(self, name: _Optional[str] = ..., actor: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UncordonNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("name", "reason", "actor", "grace_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    actor: str
    grace_s: float
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., grace_s: _Optional[float] = ...) -> None: ...

class DrainNodeResponse(_message.Message):
    __slots__ = ("node", "replicas_to_move")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_TO_MOVE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    replicas_to_move: int
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., replicas_to_move: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "deployment", "pool", "node", "gpu_indices", "desired_state", "observed_state", "generation", "version", "restarts", "message", "endpoint")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    DESIRED_STATE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    deployment: str
    pool: _common_pb2.PoolKey
    node: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    desired_state: ReplicaDesiredState
    observed_state: ReplicaObservedState
    generation: int
    version: int
    restarts: int
    message: str
    endpoint: str
    def __init__(self, id: _Optional[str] = ..., deployment: _Optional[str] = ..., pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., node: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., desired_state: _Optional[_Union[ReplicaDesiredState, str]] = ..., observed_state: _Optional[_Union[ReplicaObservedState, str]] = ..., generation: _Optional[int] = ..., version: _Optional[int] = ..., restarts: _Optional[int] = ..., message: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class GetReplicasRequest(_message.Message):
    __slots__ = ("deployment", "page")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    page: _common_pb2.PageRequest
    def __init__(self, deployment: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class GetReplicasResponse(_message.Message):
    __slots__ = ("replicas", "next_page_token", "shortfalls")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SHORTFALLS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    next_page_token: str
    shortfalls: _containers.RepeatedCompositeFieldContainer[PoolShortfall]
    def __init__(self, replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., shortfalls: _Optional[_Iterable[_Union[PoolShortfall, _Mapping]]] = ...) -> None: ...

class PoolShortfall(_message.Message):
    __slots__ = ("deployment", "pool", "target", "ready", "reason", "since_ms")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    pool: _common_pb2.PoolKey
    target: int
    ready: int
    reason: str
    since_ms: int
    def __init__(self, deployment: _Optional[str] = ..., pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., target: _Optional[int] = ..., ready: _Optional[int] = ..., reason: _Optional[str] = ..., since_ms: _Optional[int] = ...) -> None: ...

class ApplyDesiredRequest(_message.Message):
    __slots__ = ("deployment", "spec_version", "decision_id", "pools")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    spec_version: int
    decision_id: str
    pools: _containers.RepeatedCompositeFieldContainer[_common_pb2.PoolPlan]
    def __init__(self, deployment: _Optional[str] = ..., spec_version: _Optional[int] = ..., decision_id: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[_common_pb2.PoolPlan, _Mapping]]] = ...) -> None: ...

class ApplyDesiredResponse(_message.Message):
    __slots__ = ("replicas_to_start", "replicas_to_drain", "replicas_unchanged", "infeasible")
    REPLICAS_TO_START_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_TO_DRAIN_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    replicas_to_start: int
    replicas_to_drain: int
    replicas_unchanged: int
    infeasible: _containers.RepeatedCompositeFieldContainer[_common_pb2.Infeasibility]
    def __init__(self, replicas_to_start: _Optional[int] = ..., replicas_to_drain: _Optional[int] = ..., replicas_unchanged: _Optional[int] = ..., infeasible: _Optional[_Iterable[_Union[_common_pb2.Infeasibility, _Mapping]]] = ...) -> None: ...
