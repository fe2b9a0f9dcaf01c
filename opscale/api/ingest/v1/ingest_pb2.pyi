from opscale.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestArrival(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cached_input_tokens", "count")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    count: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class LatencyObservation(_message.Message):
    __slots__ = ("ttft_ms", "tbt_ms", "e2e_ms", "count")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_FIELD_NUMBER: _ClassVar[int]
    E2E_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tbt_ms: float
    e2e_ms: float
    count: int
    def __init__(self, ttft_ms: _Optional[float] = ..., tbt_ms: _Optional[float] = ..., e2e_ms: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class QueueState(_message.Message):
    __slots__ = ("running_requests", "waiting_requests", "kv_cache_usage_fraction")
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WAITING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    running_requests: int
    waiting_requests: int
    kv_cache_usage_fraction: float
    def __init__(self, running_requests: _Optional[int] = ..., waiting_requests: _Optional[int] = ..., kv_cache_usage_fraction: _Optional[float] = ...) -> None: ...

class TokenThroughput(_message.Message):
    __slots__ = ("decode_tokens_per_s", "prefill_tokens_per_s", "interval_s")
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    interval_s: float
    def __init__(self, decode_tokens_per_s: _Optional[float] = ..., prefill_tokens_per_s: _Optional[float] = ..., interval_s: _Optional[float] = ...) -> None: ...

class OperatorBusy(_message.Message):
    __slots__ = ("busy_s", "interval_s", "batch_size")
    BUSY_S_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    busy_s: float
    interval_s: float
    batch_size: int
    def __init__(self, busy_s: _Optional[float] = ..., interval_s: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("deployment", "pool", "instance", "timestamp_ms", "arrival", "latency", "queue", "throughput", "busy", "gpu")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    pool: _common_pb2.PoolKey
    instance: str
    timestamp_ms: int
    arrival: RequestArrival
    latency: LatencyObservation
    queue: QueueState
    throughput: TokenThroughput
    busy: OperatorBusy
    gpu: _common_pb2.GpuTelemetry
    def __init__(self, deployment: _Optional[str] = ..., pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., instance: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., arrival: _Optional[_Union[RequestArrival, _Mapping]] = ..., latency: _Optional[_Union[LatencyObservation, _Mapping]] = ..., queue: _Optional[_Union[QueueState, _Mapping]] = ..., throughput: _Optional[_Union[TokenThroughput, _Mapping]] = ..., busy: _Optional[_Union[OperatorBusy, _Mapping]] = ..., gpu: _Optional[_Union[_common_pb2.GpuTelemetry, _Mapping]] = ...) -> None: ...

class PushSamplesRequest(_message.Message):
    __slots__ = ("batch_id", "samples")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, batch_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class PushSamplesResponse(_message.Message):
    __slots__ = ("accepted_samples", "duplicate")
    ACCEPTED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted_samples: int
    duplicate: bool
    def __init__(self, accepted_samples: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class StreamSamplesRequest(_message.Message):
    __slots__ = ("batch_id", "samples")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, batch_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class StreamSamplesResponse(_message.Message):
    __slots__ = ("batches", "accepted_samples", "duplicate_batches")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    accepted_samples: int
    duplicate_batches: int
    def __init__(self, batches: _Optional[int] = ..., accepted_samples: _Optional[int] = ..., duplicate_batches: _Optional[int] = ...) -> None: ...

class GetWindowSummaryRequest(_message.Message):
    __slots__ = ("deployment", "window_s", "pools")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    window_s: float
    pools: _containers.RepeatedCompositeFieldContainer[_common_pb2.PoolKey]
    def __init__(self, deployment: _Optional[str] = ..., window_s: _Optional[float] = ..., pools: _Optional[_Iterable[_Union[_common_pb2.PoolKey, _Mapping]]] = ...) -> None: ...

class SignalStaleness(_message.Message):
    __slots__ = ("signal", "staleness_s", "never_seen")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STALENESS_S_FIELD_NUMBER: _ClassVar[int]
    NEVER_SEEN_FIELD_NUMBER: _ClassVar[int]
    signal: str
    staleness_s: float
    never_seen: bool
    def __init__(self, signal: _Optional[str] = ..., staleness_s: _Optional[float] = ..., never_seen: _Optional[bool] = ...) -> None: ...

class PoolWindow(_message.Message):
    __slots__ = ("pool", "queue_waiting_mean", "queue_running_mean", "kv_cache_usage_fraction", "busy_fraction", "batch_size_mean", "decode_tokens_per_s", "prefill_tokens_per_s", "staleness")
    POOL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAITING_MEAN_FIELD_NUMBER: _ClassVar[int]
    QUEUE_RUNNING_MEAN_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    BUSY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_MEAN_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    pool: _common_pb2.PoolKey
    queue_waiting_mean: float
    queue_running_mean: float
    kv_cache_usage_fraction: float
    busy_fraction: float
    batch_size_mean: float
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    staleness: _containers.RepeatedCompositeFieldContainer[SignalStaleness]
    def __init__(self, pool: _Optional[_Union[_common_pb2.PoolKey, _Mapping]] = ..., queue_waiting_mean: _Optional[float] = ..., queue_running_mean: _Optional[float] = ..., kv_cache_usage_fraction: _Optional[float] = ..., busy_fraction: _Optional[float] = ..., batch_size_mean: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., prefill_tokens_per_s: _Optional[float] = ..., staleness: _Optional[_Iterable[_Union[SignalStaleness, _Mapping]]] = ...) -> None: ...

class LengthBin(_message.Message):
    __slots__ = ("lower_tokens", "upper_tokens", "count")
    LOWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    UPPER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    lower_tokens: float
    upper_tokens: float
    count: int
    def __init__(self, lower_tokens: _Optional[float] = ..., upper_tokens: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class WindowSummary(_message.Message):
    __slots__ = ("deployment", "window_s", "end_timestamp_ms", "arrivals_per_s", "input_tokens_mean", "input_tokens_p99", "output_tokens_mean", "output_tokens_p99", "ttft_ms_p50", "ttft_ms_p99", "tbt_ms_p50", "tbt_ms_p99", "decode_tokens_per_s", "prefill_tokens_per_s", "gpu_utilization_fraction", "gpu_power_watts", "pools", "staleness", "ttft_samples", "tbt_samples", "ttft_ms_p90", "tbt_ms_p90", "input_tokens_bins", "output_tokens_bins", "cached_input_fraction", "e2e_ms_p50", "e2e_ms_p99", "e2e_samples", "arrivals")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    END_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_PER_S_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_MEAN_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_P99_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_MEAN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_P99_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_P50_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_P99_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_P50_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_P99_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    GPU_POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    TTFT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TBT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_P90_FIELD_NUMBER: _ClassVar[int]
    TBT_MS_P90_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_BINS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_BINS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    E2E_MS_P50_FIELD_NUMBER: _ClassVar[int]
    E2E_MS_P99_FIELD_NUMBER: _ClassVar[int]
    E2E_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    window_s: float
    end_timestamp_ms: int
    arrivals_per_s: float
    input_tokens_mean: float
    input_tokens_p99: float
    output_tokens_mean: float
    output_tokens_p99: float
    ttft_ms_p50: float
    ttft_ms_p99: float
    tbt_ms_p50: float
    tbt_ms_p99: float
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    gpu_utilization_fraction: float
    gpu_power_watts: float
    pools: _containers.RepeatedCompositeFieldContainer[PoolWindow]
    staleness: _containers.RepeatedCompositeFieldContainer[SignalStaleness]
    ttft_samples: int
    tbt_samples: int
    ttft_ms_p90: float
    tbt_ms_p90: float
    input_tokens_bins: _containers.RepeatedCompositeFieldContainer[LengthBin]
    output_tokens_bins: _containers.RepeatedCompositeFieldContainer[LengthBin]
    cached_input_fraction: float
    e2e_ms_p50: float
    e2e_ms_p99: float
    e2e_samples: int
    arrivals: int
    def __init__(self, deployment: _Optional[str] = ..., window_s: _Optional[float] = ..., end_timestamp_ms: _Optional[int] = ..., arrivals_per_s: _Optional[float] = ..., input_tokens_mean: _Optional[float] = ..., input_tokens_p99: _Optional[float] = ..., output_tokens_mean: _Optional[float] = ..., output_tokens_p99: _Optional[float] = ..., ttft_ms_p50: _Optional[float] = ..., ttft_ms_p99: _Optional[float] = ..., tbt_ms_p50: _Optional[float] = ..., tbt_ms_p99: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., prefill_tokens_per_s: _Optional[float] = ..., gpu_utilization_fraction: _Optional[float] = ..., gpu_power_watts: _Optional[float] = ..., pools: _Optional[_Iterable[_Union[PoolWindow, _Mapping]]] = ..., staleness: _Optional[_Iterable[_Union[SignalStaleness, _Mapping]]] = ..., ttft_samples: _Optional[int] = ..., tbt_samples: _Optional[int] = ..., ttft_ms_p90: _Optional[float] = ..., tbt_ms_p90: _Optional[float] = ..., input_tokens_bins: _Optional[_Iterable[_Union[LengthBin, _Mapping]]] = ..., output_tokens_bins: _Optional[_Iterable[_Union[LengthBin, _Mapping]]] = ..., cached_input_fraction: _Optional[float] = ..., e2e_ms_p50: _Optional[float] = ..., e2e_ms_p99: _Optional[float] = ..., e2e_samples: _Optional[int] = ..., arrivals: _Optional[int] = ...) -> None: ...

class GetWindowSummaryResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: WindowSummary
    def __init__(self, summary: _Optional[_Union[WindowSummary, _Mapping]] = ...) -> None: ...
