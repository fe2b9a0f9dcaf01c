"""Metrics ingest: proto <-> domain conversions.

Only the shape is checked here (a payload is present, enums are known); values and timestamps are
checked by ``opscale.signals.validate_samples`` in the app, so pushed and scraped samples pass the same
checks. Messages name ``samples[i].<field>`` as the caller sent it.

This runs for every sample of every push (tens of thousands per second), so it reads each field once
and looks pools up in a table instead of converting enums per sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opscale.api.common.v1 import common_pb2
from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.counters import HistogramBin
from opscale.errors import InvalidArgument
from opscale.pools import OperatorKind, PoolKey, Stage
from opscale.services.ingest.app import WindowQuery
from opscale.signals import (
    Arrival,
    GpuTelemetry,
    Latency,
    LatencyKind,
    OperatorBusy,
    Payload,
    PoolSummary,
    QueueState,
    Sample,
    SampleBatch,
    Throughput,
    WindowSummary,
)
from opscale.wire.enums import OPERATOR, STAGE
from opscale.wire.names import require_name
from opscale.wire.pools import pool_to_pb
from opscale.wire.validate import check_text

_LATENCY_KINDS = {k.value: k for k in LatencyKind}
_PAYLOADS = ", ".join(f.name for f in pb.Sample.DESCRIPTOR.oneofs_by_name["payload"].fields)
# (stage, operator) enum numbers -> pool. An unspecified operator means the whole instance (MODEL).
_POOLS: dict[tuple[int, int], PoolKey] = {
    (STAGE.to_pb(stage), o_pb): PoolKey(stage.value, op.value)
    for stage in Stage
    for o_pb, op in [
        *((OPERATOR.to_pb(o), o) for o in OperatorKind),
        (common_pb2.OPERATOR_KIND_UNSPECIFIED, OperatorKind.MODEL),
    ]
}


def _pool(msg: common_pb2.PoolKey, where: str) -> PoolKey | None:
    """None when neither stage nor operator is set (deployment-wide samples need no pool)."""
    found = _POOLS.get((msg.stage, msg.operator))
    if found is not None:
        return found
    if msg.stage == common_pb2.STAGE_UNSPECIFIED:
        if msg.operator == common_pb2.OPERATOR_KIND_UNSPECIFIED:
            return None
        raise InvalidArgument(f"{where}.stage is required when an operator is given", field=f"{where}.stage")
    STAGE.from_pb(msg.stage, f"{where}.stage")  # raises, naming the allowed stages
    try:
        OPERATOR.from_pb(msg.operator, f"{where}.operator")
    except InvalidArgument as exc:
        raise InvalidArgument(f"{exc.message} (or unset: the whole model)", field=exc.field) from None
    raise AssertionError("every known (stage, operator) pair is in _POOLS")


def _payload(msg: pb.Sample, i: int) -> Payload:
    kind = msg.WhichOneof("payload")
    if kind == "latency":
        lat = msg.latency
        which = lat.WhichOneof("value")
        if which is None:
            where = f"samples[{i}].latency"
            raise InvalidArgument(f"{where}: one of ttft_ms, tbt_ms, e2e_ms is required", field=where)
        return Latency(_LATENCY_KINDS[which], getattr(lat, which), lat.count or 1)
    if kind == "arrival":
        a = msg.arrival
        return Arrival(a.input_tokens, a.output_tokens, a.cached_input_tokens, a.count or 1)
    if kind == "queue":
        q = msg.queue
        return QueueState(q.running_requests, q.waiting_requests, q.kv_cache_usage_fraction)
    if kind == "throughput":
        t = msg.throughput
        return Throughput(t.decode_tokens_per_s, t.prefill_tokens_per_s, t.interval_s)
    if kind == "busy":
        b = msg.busy
        return OperatorBusy(b.busy_s, b.interval_s, b.batch_size)
    if kind == "gpu":
        g = msg.gpu
        return GpuTelemetry(g.utilization_fraction, g.power_watts)
    where = f"samples[{i}]"
    raise InvalidArgument(f"{where}: a payload is required (one of {_PAYLOADS})", field=where)


def sample_from_pb(msg: pb.Sample, i: int) -> Sample:
    pool = _pool(msg.pool, f"samples[{i}].pool") if msg.HasField("pool") else None
    if "\x00" in msg.instance:
        check_text(msg.instance, f"samples[{i}].instance")
    # timestamp_ms 0 (unset) becomes at_s 0, which validation refuses as missing.
    return Sample(msg.deployment, msg.timestamp_ms / 1000, _payload(msg, i), pool, msg.instance)


def sample_to_pb(s: Sample) -> pb.Sample:
    """The inverse of ``sample_from_pb`` (a MODEL operator is sent explicitly)."""
    msg = pb.Sample(deployment=s.deployment, instance=s.instance, timestamp_ms=round(s.at_s * 1000))
    if s.pool is not None:
        msg.pool.CopyFrom(pool_to_pb(s.pool))
    p = s.payload
    if isinstance(p, Latency):
        setattr(msg.latency, p.kind.value, p.ms)
        msg.latency.count = p.count
    elif isinstance(p, Arrival):
        msg.arrival.CopyFrom(
            pb.RequestArrival(
                input_tokens=p.input_tokens,
                output_tokens=p.output_tokens,
                cached_input_tokens=p.cached_input_tokens,
                count=p.count,
            )
        )
    elif isinstance(p, QueueState):
        msg.queue.CopyFrom(
            pb.QueueState(
                running_requests=p.running_requests,
                waiting_requests=p.waiting_requests,
                kv_cache_usage_fraction=p.kv_cache_usage_fraction,
            )
        )
    elif isinstance(p, Throughput):
        msg.throughput.CopyFrom(
            pb.TokenThroughput(
                decode_tokens_per_s=p.decode_tokens_per_s,
                prefill_tokens_per_s=p.prefill_tokens_per_s,
                interval_s=p.interval_s,
            )
        )
    elif isinstance(p, OperatorBusy):
        msg.busy.CopyFrom(pb.OperatorBusy(busy_s=p.busy_s, interval_s=p.interval_s, batch_size=p.batch_size))
    else:
        msg.gpu.CopyFrom(
            common_pb2.GpuTelemetry(utilization_fraction=p.utilization_fraction, power_watts=p.power_watts)
        )
    return msg


def batch_from_pb(msg: pb.PushSamplesRequest | pb.StreamSamplesRequest) -> SampleBatch:
    """Pushes skip the generic edge walk (``ServiceDef.fast_paths``): the strings read here are
    checked here, the numbers and enums by ``_pool`` and ``opscale.signals.validate_samples``."""
    samples = tuple(sample_from_pb(s, i) for i, s in enumerate(msg.samples))
    return SampleBatch(samples, check_text(msg.batch_id, "batch_id") or None)


def window_query_from_pb(msg: pb.GetWindowSummaryRequest) -> WindowQuery:
    deployment = require_name(msg.deployment, "deployment")
    pools = []
    for i, key in enumerate(msg.pools):
        pool = _pool(key, f"pools[{i}]")
        if pool is None:
            raise InvalidArgument(f"pools[{i}].stage is required", field=f"pools[{i}].stage")
        pools.append(pool)
    return WindowQuery(deployment=deployment, window_s=msg.window_s, pools=tuple(pools))


# --- domain -> proto ---------------------------------------------------------------------------------
# Absent values (no observations in the window) are 0 on the wire; counts and staleness say why.


def _z(value: float | None) -> float:
    return 0.0 if value is None else value


def _staleness(values: Mapping[str, float | None]) -> list[pb.SignalStaleness]:
    return [
        pb.SignalStaleness(signal=name, staleness_s=_z(v), never_seen=v is None) for name, v in values.items()
    ]


def _bins(bins: Iterable[HistogramBin]) -> list[pb.LengthBin]:
    return [pb.LengthBin(lower_tokens=b.lower, upper_tokens=b.upper, count=b.count) for b in bins]


def _pool_to_pb(p: PoolSummary) -> pb.PoolWindow:
    return pb.PoolWindow(
        pool=pool_to_pb(p.pool),
        queue_waiting_mean=_z(p.queue_waiting_mean),
        queue_running_mean=_z(p.queue_running_mean),
        kv_cache_usage_fraction=_z(p.kv_cache_usage_fraction),
        busy_fraction=_z(p.busy_fraction),
        batch_size_mean=_z(p.batch_size_mean),
        decode_tokens_per_s=p.decode_tokens_per_s,
        prefill_tokens_per_s=p.prefill_tokens_per_s,
        staleness=_staleness(p.staleness_s),
    )


def summary_to_pb(s: WindowSummary) -> pb.WindowSummary:
    inp, out, ttft, tbt, e2e = s.input_tokens, s.output_tokens, s.ttft_ms, s.tbt_ms, s.e2e_ms
    return pb.WindowSummary(
        deployment=s.deployment,
        window_s=s.window_s,
        end_timestamp_ms=round(s.end_s * 1000),
        arrivals_per_s=s.arrivals_per_s,
        arrivals=s.arrivals,
        input_tokens_mean=_z(inp.mean),
        input_tokens_p99=_z(inp.p99),
        output_tokens_mean=_z(out.mean),
        output_tokens_p99=_z(out.p99),
        input_tokens_bins=_bins(inp.bins),
        output_tokens_bins=_bins(out.bins),
        cached_input_fraction=_z(s.cached_input_fraction),
        ttft_ms_p50=_z(ttft.p50),
        ttft_ms_p90=_z(ttft.p90),
        ttft_ms_p99=_z(ttft.p99),
        ttft_samples=ttft.count,
        tbt_ms_p50=_z(tbt.p50),
        tbt_ms_p90=_z(tbt.p90),
        tbt_ms_p99=_z(tbt.p99),
        tbt_samples=tbt.count,
        e2e_ms_p50=_z(e2e.p50),
        e2e_ms_p99=_z(e2e.p99),
        e2e_samples=e2e.count,
        decode_tokens_per_s=s.decode_tokens_per_s,
        prefill_tokens_per_s=s.prefill_tokens_per_s,
        gpu_utilization_fraction=_z(s.gpu_utilization_fraction),
        gpu_power_watts=_z(s.gpu_power_watts),
        pools=[_pool_to_pb(p) for p in s.pools],
        staleness=_staleness(s.staleness_s),
    )
