"""The simulated serving framework's side of ingest: per second of virtual time, the samples a real
engine would push (arrivals, TTFT/TBT/E2E, queue state, throughput, operator busy time, GPU telemetry)
go through the SAME validation, pre-aggregation and counter-store writes as metrics-ingest
(``validate_samples`` → ``samples_to_writes`` → ``CounterStore.apply``), and each decision tick reads
its window through the decision service's own ``read_load`` (``read_window_summary`` →
``to_load_window``). The policies therefore see exactly what they would see live, bucketing and
histogram quantiles included.

Validation (``validate=True``) is what ingest does to untrusted input; the simulator's own samples
are checked by a unit test and skipped in long runs (it changes no window, only costs time).

The in-process counter store is async by contract but never awaits anything; ``_sync`` drives one
coroutine to completion without an event loop (a loop per call would cost more than the simulation).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from opscale.counters.memory import InMemoryCounterStore
from opscale.policy.types import LoadWindow, PoolKey
from opscale.signals import (
    Arrival,
    GpuTelemetry,
    Latency,
    LatencyKind,
    OperatorBusy,
    QueueState,
    Sample,
    Throughput,
    samples_to_writes,
    store_settings,
    validate_samples,
)
from opscale.signals.load import read_load
from opscale.spec import OperatorKind, PoolRef, Stage

T = TypeVar("T")
BASE_EPOCH_S = 1_700_000_000.0  # virtual t=0 as a wall-clock instant (the store keys buckets by epoch ms)


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the in-process counter store suspended; it must not await")


def pool_ref(key: PoolKey) -> PoolRef:
    return PoolRef(stage=Stage(key.stage), operator=OperatorKind(key.operator))


class SignalFeed:
    def __init__(
        self,
        deployment: str,
        pools: Sequence[PoolKey],
        *,
        window_s: float = 30.0,
        validate: bool = True,
        pool_signals: bool = True,
    ) -> None:
        self.deployment = deployment
        self.pools = tuple(pools)
        # Per-pool queue/busy/KV series cost ~10 store reads per pool per tick; the shipped policies
        # read only deployment-wide fields (rate, lengths, latencies, decode TPS, GPU utilization), so
        # a run may leave them out (``pool_signals=False``): the windows they read are unchanged.
        self.pool_signals = pool_signals
        self.read_pools = self.pools if pool_signals else ()
        self.refs = {p: pool_ref(p) for p in self.pools}
        self.store = InMemoryCounterStore(store_settings())
        self.window_s = window_s
        self.validate = validate
        self.samples_written = 0

    def push(self, samples: list[Sample], now_s: float) -> None:
        if not samples:
            return
        now = BASE_EPOCH_S + now_s
        for start in range(0, len(samples), 5000):
            chunk = samples[start : start + 5000]
            if self.validate:
                validate_samples(chunk, now_s=now, store=self.store.settings)
            _sync(self.store.apply(samples_to_writes(chunk, self.store.settings), now_s=now))
        self.samples_written += len(samples)

    def window(self, now_s: float) -> LoadWindow:
        return _sync(
            read_load(
                self.store,
                self.deployment,
                self.read_pools,
                now_s=BASE_EPOCH_S + now_s,
                window_s=self.window_s,
            )
        )

    # --- sample builders (times are virtual seconds) -------------------------------------------------

    def arrival(self, at_s: float, input_tokens: int, output_tokens: int) -> Sample:
        return Sample(self.deployment, BASE_EPOCH_S + at_s, Arrival(input_tokens, output_tokens))

    def latency(self, kind: LatencyKind, at_s: float, ms: float, count: int = 1) -> Sample:
        return Sample(self.deployment, BASE_EPOCH_S + at_s, Latency(kind, ms, count))

    def queue(self, pool: PoolKey, at_s: float, running: int, waiting: int, kv: float) -> Sample:
        return Sample(self.deployment, BASE_EPOCH_S + at_s, QueueState(running, waiting, kv), self.refs[pool])

    def throughput(
        self, pool: PoolKey, at_s: float, decode_tps: float, prefill_tps: float, interval_s: float
    ) -> Sample:
        return Sample(
            self.deployment,
            BASE_EPOCH_S + at_s,
            Throughput(decode_tps, prefill_tps, interval_s),
            self.refs[pool],
        )

    def busy(self, pool: PoolKey, at_s: float, busy_s: float, interval_s: float, batch: int) -> Sample:
        return Sample(
            self.deployment, BASE_EPOCH_S + at_s, OperatorBusy(busy_s, interval_s, batch), self.refs[pool]
        )

    def gpu(self, at_s: float, utilization: float, watts: float) -> Sample:
        return Sample(self.deployment, BASE_EPOCH_S + at_s, GpuTelemetry(utilization, watts))
