"""The SDK's buffer and recorder: bounded, drop-oldest with a count, batches keep their id until
acknowledged, retries stop on permanent errors or after max_retry_s, bad values never leave."""

from __future__ import annotations

import math
import threading

import grpc
import pytest

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.sdk.buffer import Backoff, SampleBuffer
from opscale.sdk.recorder import Recorder


def recorder(
    max_buffered: int = 10, batch_size: int = 4, now: float = 1000.0
) -> tuple[Recorder, SampleBuffer]:
    buffer = SampleBuffer(max_buffered, batch_size, max_retry_s=60.0)
    return Recorder(buffer, "llama", "decode-7", clock=lambda: now), buffer


def test_full_buffer_drops_the_oldest_and_counts() -> None:
    rec, buf = recorder(max_buffered=3)
    for ms in (1.0, 2.0, 3.0, 4.0, 5.0):
        rec.record_tbt(ms)
    assert buf.stats().dropped_overflow == 2 and buf.stats().buffered == 3
    batch = buf.next_batch(0.0)
    assert batch is not None
    assert [s.latency.tbt_ms for s in batch.samples] == [3.0, 4.0, 5.0]  # the newest three survive


def test_a_batch_keeps_its_id_until_acknowledged() -> None:
    rec, buf = recorder(batch_size=2)
    for _ in range(5):
        rec.record_arrival(100, 10)
    first = buf.next_batch(0.0)
    assert first is not None and len(first.samples) == 2
    assert buf.failed(grpc.StatusCode.UNAVAILABLE, "connection refused", 1.0)  # retried...
    again = buf.next_batch(2.0)
    assert again is first and again.request().batch_id == first.batch_id  # ...under the same id
    buf.sent()
    second = buf.next_batch(3.0)
    assert second is not None and second.batch_id != first.batch_id
    stats = buf.stats()
    assert (stats.sent_samples, stats.sent_batches, stats.retries, stats.buffered) == (2, 1, 1, 3)
    assert stats.last_error == "UNAVAILABLE: connection refused"


def test_permanent_errors_and_old_batches_are_given_up() -> None:
    rec, buf = recorder(batch_size=2)
    for _ in range(4):
        rec.record_ttft(10.0)
    buf.next_batch(0.0)
    assert not buf.failed(grpc.StatusCode.INVALID_ARGUMENT, "samples[1].latency.ttft_ms", 1.0)
    assert buf.stats().dropped_rejected == 2
    buf.next_batch(10.0)
    assert buf.failed(grpc.StatusCode.UNAVAILABLE, "down", 69.0)  # 59 s of retrying: go on
    assert not buf.failed(grpc.StatusCode.UNAVAILABLE, "down", 71.0)  # over max_retry_s = 60
    assert buf.stats().dropped_expired == 2 and buf.stats().buffered == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.record_ttft(math.nan),
        lambda r: r.record_tbt(-1.0),
        lambda r: r.record_e2e(math.inf),
        lambda r: r.record_arrival(10, 5, cached_input_tokens=11),
        lambda r: r.record_queue("decode", 1, 1, 1.5),
        lambda r: r.record_throughput("decode", 10.0, 0.0, 0.0),
        lambda r: r.record_busy("prefill", "attention", 2.0, 1.0, 8),
        lambda r: r.record_gpu(0.5, math.nan),
    ],
)
def test_bad_values_are_counted_not_sent(call: object) -> None:
    rec, buf = recorder()
    assert call(rec) is False  # type: ignore[operator]
    assert (buf.stats().dropped_invalid, buf.stats().buffered) == (1, 0)


def test_samples_carry_deployment_instance_time_and_pool() -> None:
    rec, buf = recorder(now=1_700_000_000.25)
    rec.record_queue("prefill", 3, 1, 0.5, operator="attention")
    rec.record_busy("decode", "ffn", 0.25, 1.0, 32, deployment="other", at_s=1_700_000_001.0)
    rec.record(pb.Sample(latency=pb.LatencyObservation(ttft_ms=5.0)))
    batch = buf.next_batch(0.0)
    assert batch is not None
    q, busy, raw = batch.samples
    assert (q.deployment, q.instance, q.timestamp_ms) == ("llama", "decode-7", 1_700_000_000_250)
    assert (q.pool.stage, q.pool.operator) == (1, 2)  # STAGE_PREFILL, OPERATOR_KIND_ATTENTION
    assert (busy.deployment, busy.timestamp_ms, busy.busy.batch_size) == ("other", 1_700_000_001_000, 32)
    assert (raw.deployment, raw.timestamp_ms) == ("llama", 1_700_000_000_250)
    with pytest.raises(ValueError, match="stage must be one of prefill, decode, serving"):
        rec.record_queue("router", 1, 1, 0.1)


def test_appending_from_many_threads_loses_nothing_but_overflow() -> None:
    rec, buf = recorder(max_buffered=1000, batch_size=100)
    threads = [threading.Thread(target=lambda: [rec.record_tbt(1.0) for _ in range(500)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = buf.stats()
    assert stats.buffered + stats.dropped_overflow == 2000 and stats.buffered == 1000


def test_backoff_is_jittered_and_capped() -> None:
    b = Backoff(base_s=0.1, cap_s=2.0)
    delays = [b.delay(n) for n in range(40)]
    assert all(0 <= d <= 2.0 for d in delays) and len(set(delays)) > 30
