from google.protobuf import struct_pb2 as _struct_pb2
from opscale.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVING_MODE_UNSPECIFIED: _ClassVar[ServingMode]
    SERVING_MODE_DISAGGREGATED: _ClassVar[ServingMode]
    SERVING_MODE_COLOCATED: _ClassVar[ServingMode]

class PlacementOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEMENT_OUTCOME_UNSPECIFIED: _ClassVar[PlacementOutcome]
    PLACEMENT_OUTCOME_PENDING: _ClassVar[PlacementOutcome]
    PLACEMENT_OUTCOME_APPLIED: _ClassVar[PlacementOutcome]
    PLACEMENT_OUTCOME_PARTIAL: _ClassVar[PlacementOutcome]
    PLACEMENT_OUTCOME_FAILED: _ClassVar[PlacementOutcome]
    PLACEMENT_OUTCOME_NOT_NEEDED: _ClassVar[PlacementOutcome]
SERVING_MODE_UNSPECIFIED: ServingMode
SERVING_MODE_DISAGGREGATED: ServingMode
SERVING_MODE_COLOCATED: ServingMode
PLACEMENT_OUTCOME_UNSPECIFIED: PlacementOutcome
PLACEMENT_OUTCOME_PENDING: PlacementOutcome
PLACEMENT_OUTCOME_APPLIED: PlacementOutcome
PLACEMENT_OUTCOME_PARTIAL: PlacementOutcome
PLACEMENT_OUTCOME_FAILED: PlacementOutcome
PLACEMENT_OUTCOME_NOT_NEEDED: PlacementOutcome

class ModelRef(_message.Message):
    __slots__ = ("preset", "hf_config_json", "name")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    HF_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    preset: str
    hf_config_json: str
    name: str
    def __init__(self, preset: _Optional[str] = ..., hf_config_json: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Slo(_message.Message):
    __slots__ = ("ttft_ms", "tbt_ms", "percentile")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tbt_ms: float
    percentile: float
    def __init__(self, ttft_ms: _Optional[float] = ..., tbt_ms: _Optional[float] = ..., percentile: _Optional[float] = ...) -> None: ...

class PoolLimits(_message.Message):
    __slots__ = ("pool", "min_replicas", "max_replicas", "max_step", "gpu_types")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolKey
    min_replicas: int
    max_replicas: int
    max_step: int
    gpu_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., max_step: _Optional[int] = ..., gpu_types: _Optional[_Iterable[str]] = ...) -> None: ...

class Stabilization(_message.Message):
    __slots__ = ("scale_up_window_s", "scale_down_window_s", "scale_up_cooldown_s", "scale_down_cooldown_s", "max_staleness_s")
    SCALE_UP_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    SCALE_UP_COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_COOLDOWN_S_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_S_FIELD_NUMBER: _ClassVar[int]
    scale_up_window_s: float
    scale_down_window_s: float
    scale_up_cooldown_s: float
    scale_down_cooldown_s: float
    max_staleness_s: float
    def __init__(self, scale_up_window_s: _Optional[float] = ..., scale_down_window_s: _Optional[float] = ..., scale_up_cooldown_s: _Optional[float] = ..., scale_down_cooldown_s: _Optional[float] = ..., max_staleness_s: _Optional[float] = ...) -> None: ...

class LaunchTemplateRef(_message.Message):
    __slots__ = ("pool", "template", "args")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POOL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolKey
    template: str
    args: _containers.ScalarMap[str, str]
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., template: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeploymentSpec(_message.Message):
    __slots__ = ("name", "model", "gpu_type", "mode", "slo", "limits", "stabilization", "interval_s", "launch", "labels", "policy_name", "params")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SLO_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    STABILIZATION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: ModelRef
    gpu_type: str
    mode: ServingMode
    slo: Slo
    limits: _containers.RepeatedCompositeFieldContainer[PoolLimits]
    stabilization: Stabilization
    interval_s: float
    launch: _containers.RepeatedCompositeFieldContainer[LaunchTemplateRef]
    labels: _containers.ScalarMap[str, str]
    policy_name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., gpu_type: _Optional[str] = ..., mode: _Optional[_Union[ServingMode, str]] = ..., slo: _Optional[_Union[Slo, _Mapping]] = ..., limits: _Optional[_Iterable[_Union[PoolLimits, _Mapping]]] = ..., stabilization: _Optional[_Union[Stabilization, _Mapping]] = ..., interval_s: _Optional[float] = ..., launch: _Optional[_Iterable[_Union[LaunchTemplateRef, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., policy_name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("spec", "version", "frozen", "frozen_reason", "created_at_ms", "updated_at_ms")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    FROZEN_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    spec: DeploymentSpec
    version: int
    frozen: bool
    frozen_reason: str
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, spec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., version: _Optional[int] = ..., frozen: _Optional[bool] = ..., frozen_reason: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class CreateDeploymentRequest(_message.Message):
    __slots__ = ("spec", "actor")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    spec: DeploymentSpec
    actor: str
    def __init__(self, spec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., actor: _Optional[str] = ...) -> None: ...

class CreateDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class UpdateDeploymentRequest(_message.Message):
    __slots__ = ("spec", "expected_version", "actor")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    spec: DeploymentSpec
    expected_version: int
    actor: str
    def __init__(self, spec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., expected_version: _Optional[int] = ..., actor: _Optional[str] = ...) -> None: ...

class UpdateDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDeploymentRequest(_message.Message):
    __slots__ = ("name", "expected_version", "actor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_version: int
    actor: str
    def __init__(self, name: _Optional[str] = ..., expected_version: _Optional[int] = ..., actor: _Optional[str] = ...) -> None: ...

class DeleteDeploymentResponse(_message.Message):
    __slots__ = ("name", "deleted_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELETED_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    deleted_version: int
    def __init__(self, name: _Optional[str] = ..., deleted_version: _Optional[int] = ...) -> None: ...

class FreezeDeploymentRequest(_message.Message):
    __slots__ = ("name", "reason", "actor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    actor: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class FreezeDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class UnfreezeDeploymentRequest(_message.Message):
    __slots__ = ("name", "actor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    actor: str
    def __init__(self, name: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class UnfreezeDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class StabilizerEffect(_message.Message):
    __slots__ = ("pool", "raw_replicas", "stabilized_replicas", "rule", "reason")
    POOL_FIELD_NUMBER: _ClassVar[int]
    RAW_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STABILIZED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolKey
    raw_replicas: int
    stabilized_replicas: int
    rule: str
    reason: str
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., raw_replicas: _Optional[int] = ..., stabilized_replicas: _Optional[int] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LoadSnapshot(_message.Message):
    __slots__ = ("window_s", "arrivals_per_s", "input_tokens_mean", "output_tokens_mean", "decode_tokens_per_s", "prefill_tokens_per_s", "ttft_ms_p99", "tbt_ms_p99", "gpu_utilization_fraction", "max_staleness_s", "stale")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_PER_S_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_MEAN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_MEAN_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_P99_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_P99_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_S_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    window_s: float
    arrivals_per_s: float
    input_tokens_mean: float
    output_tokens_mean: float
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    ttft_ms_p99: float
    tbt_ms_p99: float
    gpu_utilization_fraction: float
    max_staleness_s: float
    stale: bool
    def __init__(self, window_s: _Optional[float] = ..., arrivals_per_s: _Optional[float] = ..., input_tokens_mean: _Optional[float] = ..., output_tokens_mean: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., prefill_tokens_per_s: _Optional[float] = ..., ttft_ms_p99: _Optional[float] = ..., tbt_ms_p99: _Optional[float] = ..., gpu_utilization_fraction: _Optional[float] = ..., max_staleness_s: _Optional[float] = ..., stale: _Optional[bool] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("id", "deployment", "spec_version", "tick_ms", "policy", "policy_version", "pools", "previous_pools", "prediction", "reasons", "stabilizer_effects", "infeasible", "load", "leader_id", "placement_outcome", "placement_message", "frozen")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    TICK_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_POOLS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    STABILIZER_EFFECTS_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    deployment: str
    spec_version: int
    tick_ms: int
    policy: str
    policy_version: str
    pools: _containers.RepeatedCompositeFieldContainer[_common_pb2.PoolPlan]
    previous_pools: _containers.RepeatedCompositeFieldContainer[_common_pb2.PoolPlan]
    prediction: _common_pb2.Prediction
    reasons: _containers.RepeatedScalarFieldContainer[str]
    stabilizer_effects: _containers.RepeatedCompositeFieldContainer[StabilizerEffect]
    infeasible: _containers.RepeatedCompositeFieldContainer[_common_pb2.Infeasibility]
    load: LoadSnapshot
    leader_id: str
    placement_outcome: PlacementOutcome
    placement_message: str
    frozen: bool
    def __init__(self, id: _Optional[str] = ..., deployment: _Optional[str] = ..., spec_version: _Optional[int] = ..., tick_ms: _Optional[int] = ..., policy: _Optional[str] = ..., policy_version: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[_common_pb2.PoolPlan, _Mapping]]] = ..., previous_pools: _Optional[_Iterable[_Union[_common_pb2.PoolPlan, _Mapping]]] = ..., prediction: _Optional[_Union[_common_pb2.Prediction, _Mapping]] = ..., reasons: _Optional[_Iterable[str]] = ..., stabilizer_effects: _Optional[_Iterable[_Union[StabilizerEffect, _Mapping]]] = ..., infeasible: _Optional[_Iterable[_Union[_common_pb2.Infeasibility, _Mapping]]] = ..., load: _Optional[_Union[LoadSnapshot, _Mapping]] = ..., leader_id: _Optional[str] = ..., placement_outcome: _Optional[_Union[PlacementOutcome, str]] = ..., placement_message: _Optional[str] = ..., frozen: _Optional[bool] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class GetDecisionResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class WatchDecisionsRequest(_message.Message):
    __slots__ = ("deployments", "include_current")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CURRENT_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedScalarFieldContainer[str]
    include_current: bool
    def __init__(self, deployments: _Optional[_Iterable[str]] = ..., include_current: _Optional[bool] = ...) -> None: ...

class WatchDecisionsResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("deployment", "page")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    page: _common_pb2.PageRequest
    def __init__(self, deployment: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExplainDecisionRequest(_message.Message):
    __slots__ = ("deployment", "decision_id")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    decision_id: str
    def __init__(self, deployment: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...

class PoolEstimate(_message.Message):
    __slots__ = ("pool", "arrival_rate_per_s", "service_time_ms", "utilization", "queue_wait_ms", "latency_ms", "memory_bytes_per_replica")
    POOL_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolKey
    arrival_rate_per_s: float
    service_time_ms: float
    utilization: float
    queue_wait_ms: float
    latency_ms: float
    memory_bytes_per_replica: float
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., arrival_rate_per_s: _Optional[float] = ..., service_time_ms: _Optional[float] = ..., utilization: _Optional[float] = ..., queue_wait_ms: _Optional[float] = ..., latency_ms: _Optional[float] = ..., memory_bytes_per_replica: _Optional[float] = ...) -> None: ...

class ExplainDecisionResponse(_message.Message):
    __slots__ = ("decision", "estimates", "narrative")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    NARRATIVE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    estimates: _containers.RepeatedCompositeFieldContainer[PoolEstimate]
    narrative: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., estimates: _Optional[_Iterable[_Union[PoolEstimate, _Mapping]]] = ..., narrative: _Optional[_Iterable[str]] = ...) -> None: ...

class HypotheticalLoad(_message.Message):
    __slots__ = ("requests_per_s", "input_tokens", "output_tokens")
    REQUESTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    requests_per_s: float
    input_tokens: float
    output_tokens: float
    def __init__(self, requests_per_s: _Optional[float] = ..., input_tokens: _Optional[float] = ..., output_tokens: _Optional[float] = ...) -> None: ...

class WhatIfRequest(_message.Message):
    __slots__ = ("deployment", "spec", "load", "policy_names")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAMES_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    spec: DeploymentSpec
    load: HypotheticalLoad
    policy_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deployment: _Optional[str] = ..., spec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., load: _Optional[_Union[HypotheticalLoad, _Mapping]] = ..., policy_names: _Optional[_Iterable[str]] = ...) -> None: ...

class WhatIfPlan(_message.Message):
    __slots__ = ("pools", "prediction", "reasons", "infeasible", "policy_name")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[_common_pb2.PoolPlan]
    prediction: _common_pb2.Prediction
    reasons: _containers.RepeatedScalarFieldContainer[str]
    infeasible: _containers.RepeatedCompositeFieldContainer[_common_pb2.Infeasibility]
    policy_name: str
    def __init__(self, pools: _Optional[_Iterable[_Union[_common_pb2.PoolPlan, _Mapping]]] = ..., prediction: _Optional[_Union[_common_pb2.Prediction, _Mapping]] = ..., reasons: _Optional[_Iterable[str]] = ..., infeasible: _Optional[_Iterable[_Union[_common_pb2.Infeasibility, _Mapping]]] = ..., policy_name: _Optional[str] = ...) -> None: ...

class WhatIfResponse(_message.Message):
    __slots__ = ("plans",)
    PLANS_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[WhatIfPlan]
    def __init__(self, plans: _Optional[_Iterable[_Union[WhatIfPlan, _Mapping]]] = ...) -> None: ...
