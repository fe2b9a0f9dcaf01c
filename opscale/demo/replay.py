"""The demo's simulated serving framework: the simulator's data plane, stepped in lockstep with the wall
clock, its load pushed to the real ingest through the SDK, its pool sizes taken from the real decision
service's WatchDecisions stream.

Every wall-clock second the data plane advances one second of the (time-compressed) trace; that
second's arrivals, TTFT and TBT observations and token rates go out through ``AsyncOpscaleClient``
stamped with wall-clock times, exactly as a router would send them. The latest decision's pool plans are
applied to the data plane (``DataPlane.apply``: new replicas pay the modelled start-up time, surplus ones
drain), so the latencies the demo reports are those of the plan the live control plane chose.

Beside it, the ``model`` policy's raw planner (``plan_model``) is run in-process on the same load the
decision recorded for its tick: no stabilizer, no start-up. The live view shows it, labelled raw, until
the simulated model-level runs (``opscale.demo.compare``) are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from opscale.api.common.v1 import common_pb2 as cpb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.model import perf_model
from opscale.policy.model_level import plan_model
from opscale.policy.spec_adapter import policy_setup
from opscale.policy.types import SLO, LoadWindow, PoolKey, PoolPlan
from opscale.sdk import AsyncOpscaleClient
from opscale.sim.engine import DataPlane, Requests, SimConfig, TickStats
from opscale.sim.run import units_for
from opscale.sim.traces import Trace
from opscale.spec import DeploymentSpec
from opscale.wire.pools import pool_from_pb

LATENCY_WINDOW_S = 10  # the live view's p99s: the last 10 simulated seconds of observations


def pool_key_of(pool: cpb.PoolKey) -> PoolKey:
    return pool_from_pb(pool, "pool")


@dataclass
class Second:
    """One row of the timeline (one wall-clock second of the demo)."""

    t_s: float
    arrivals: int
    input_tokens: int
    output_tokens: int
    decode_tps: float
    prefill_tps: float
    in_system: int
    ttft_p99_ms: float | None
    tbt_p99_ms: float | None
    decided: dict[str, int]  # the latest decision's replicas per pool
    desired: dict[str, int]  # placement's replicas meant to run
    running: dict[str, int]
    sim_replicas: dict[str, int]
    gpus_operator: int  # distinct GPUs holding the deployment's replicas (placement's packing)
    gpus_plan_operator: int  # the live decision's predicted GPUs (whole GPUs per replica)
    gpus_model_level: int | None
    decisions: int
    decision_id: str


@dataclass
class ReplayState:
    rows: list[Second] = field(default_factory=list)
    decisions: int = 0
    latest: dpb.Decision | None = None
    decision_log: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _p99(values: list[tuple[float, int]]) -> float | None:
    if not values:
        return None
    v = np.array([x for x, _ in values])
    w = np.array([c for _, c in values], dtype=np.float64)
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, 0.99 * cum[-1])])


def plan_of(decision: dpb.Decision) -> dict[PoolKey, PoolPlan]:
    return {
        pool_key_of(p.pool): PoolPlan(
            replicas=p.replicas, batch_size=p.batch_size or None, gpus_per_replica=max(1, p.gpus_per_replica)
        )
        for p in decision.pools
    }


def model_level_gpus(spec: DeploymentSpec, decision: dpb.Decision) -> int | None:
    """GPUs the model policy's planner would hold for the load this decision saw."""
    load = decision.load
    if load.window_s <= 0 or load.arrivals_per_s <= 0:
        return None
    window = LoadWindow(
        window_s=load.window_s,
        arrival_rate_rps=load.arrivals_per_s,
        input_tokens_mean=load.input_tokens_mean,
        output_tokens_mean=load.output_tokens_mean,
        decode_tps=load.decode_tokens_per_s,
    )
    perf = perf_model(spec.model.shape(), spec.gpu_type)
    slo = SLO(spec.slo.ttft_ms, spec.slo.tbt_ms, spec.slo.percentile)
    return plan_model(perf, window, slo).prediction.gpus


class Replay:
    def __init__(
        self,
        spec: DeploymentSpec,
        trace: Trace,
        duration_s: int,
        ingest: str,
        decision: str,
        placement: grpc.aio.Channel,
    ) -> None:
        self.spec = spec
        self.trace = trace
        self.duration_s = duration_s
        self.client = AsyncOpscaleClient(ingest, deployment=spec.name, decision_address=decision)
        self.placement = placement_pb2_grpc.PlacementServiceStub(placement)
        setup = policy_setup(spec)
        perf = perf_model(spec.model.shape(), spec.gpu_type)
        self.req = Requests(trace.arrival_s, trace.input_tokens, trace.output_tokens)
        self.cfg = SimConfig()
        self.dp = DataPlane(perf, units_for(perf, tuple(setup.pools)), self.req, self.cfg)
        self.state = ReplayState()
        self._applied: str = ""
        self._ttft: list[list[tuple[float, int]]] = []
        self._tbt: list[list[tuple[float, int]]] = []
        self._watcher: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        async for d in self.client.watch_decisions([self.spec.name]):
            self.state.decisions += 1
            self.state.latest = d
            self.state.decision_log.append(
                {
                    "id": d.id,
                    "tick_ms": d.tick_ms,
                    "pools": {str(pool_key_of(p.pool)): p.replicas for p in d.pools},
                    "reasons": list(d.reasons)[:3],
                }
            )

    async def _replicas(self) -> tuple[dict[str, int], dict[str, int], int]:
        try:
            reply = await self.placement.GetReplicas(
                ppb.GetReplicasRequest(deployment=self.spec.name), timeout=2
            )
        except grpc.aio.AioRpcError:
            return {}, {}, 0
        desired: dict[str, int] = defaultdict(int)
        running: dict[str, int] = defaultdict(int)
        gpus: set[tuple[str, int]] = set()
        for r in reply.replicas:
            key = str(pool_key_of(r.pool))
            if r.desired_state == ppb.REPLICA_DESIRED_STATE_RUNNING:
                desired[key] += 1
            if r.observed_state == ppb.REPLICA_OBSERVED_STATE_READY:
                running[key] += 1
            if r.desired_state != ppb.REPLICA_DESIRED_STATE_STOPPED:
                gpus.update((r.node, i) for i in r.gpu_indices)
        return dict(desired), dict(running), len(gpus)

    def _step(self, sec: int) -> tuple[TickStats, np.ndarray]:
        stats = TickStats()
        ticks = max(1, round(1.0 / self.cfg.tick_s))
        dt = 1.0 / ticks
        start = int(np.searchsorted(self.trace.arrival_s, float(sec), side="left"))
        ptr = start
        for k in range(ticks):
            t, t_end = sec + k * dt, sec + (k + 1) * dt
            hi = int(np.searchsorted(self.trace.arrival_s, t_end, side="left"))
            if hi > ptr:
                self.dp.enqueue(np.arange(ptr, hi))
                ptr = hi
            self.dp.tick(t, t_end, stats)
        return stats, np.arange(start, ptr)

    def _push(self, stats: TickStats, new: np.ndarray, wall0: float, now: float) -> None:
        c = self.client
        for i in new.tolist():
            c.record_arrival(
                int(self.req.input_tokens[i]),
                int(self.req.output_tokens[i]),
                at_s=wall0 + float(self.req.arrival_s[i]),
            )
        for at, ms in stats.ttft:
            c.record_ttft(ms, at_s=wall0 + min(at, now))
        # TBT observations come per sequence per tick; folded to 0.1 ms bins per second so one second
        # of decode is tens of samples, not thousands (the store buckets them into histograms anyway).
        bins: dict[float, int] = defaultdict(int)
        for _, ms, n in stats.tbt:
            bins[round(ms, 1)] += n
        for ms, n in bins.items():
            c.record_tbt(ms, count=n, at_s=wall0 + now - 0.5)
        at = wall0 + now - 1e-3
        holder = next((p for p in self.dp.decode if p.holder), None)
        if holder is not None:
            c.record_throughput(
                "decode", stats.decode_tokens, 0.0, 1.0, operator=holder.key.operator, at_s=at
            )
        last = self.dp.prefill[-1].key
        c.record_throughput("prefill", 0.0, stats.prefill_tokens, 1.0, operator=last.operator, at_s=at)

    def _push_history_second(self, k: int, history_s: int, at_s: float) -> None:
        """Second ``k`` (mod ``history_s``) of the replay's start, stamped ``at_s``: arrivals and the token
        rates a busy engine would report for them."""
        c = self.client
        arr = self.trace.arrival_s
        lo, hi = np.searchsorted(arr, [k % history_s, k % history_s + 1])
        ids = np.arange(lo, hi)
        for i in ids.tolist():
            c.record_arrival(int(self.req.input_tokens[i]), int(self.req.output_tokens[i]), at_s=at_s)
        if len(ids):
            holder = next((p for p in self.dp.decode if p.holder), None)
            out = float(self.req.output_tokens[ids].sum())
            if holder is not None:
                c.record_throughput("decode", out, 0.0, 1.0, operator=holder.key.operator, at_s=at_s)
            last = self.dp.prefill[-1].key
            inp = float(self.req.input_tokens[ids].sum())
            c.record_throughput("prefill", 0.0, inp, 1.0, operator=last.operator, at_s=at_s)

    async def warm_up(self, stop: asyncio.Event, history_s: int = 30, timeout_s: float = 40.0) -> bool:
        """Give the control plane a history before t=0, as a live deployment has, then start the data
        plane on the plan the decision service settles on for it.

        The first ``history_s`` seconds of the replay are pushed stamped in the ``history_s`` before now,
        then repeated second by second (stamped now) so the window stays full, until two decisions made
        after the history arrived agree; that plan is applied with its replicas ready (the convention of
        ``opscale simulate``: the plan in force at t=0 starts ready). Waiting for agreement matters:
        decisions made before the history arrived hold the minimum, and the stabilizer's step limit
        takes a few ticks to climb from there. Without the warm-up the replay starts on one replica per
        pool, a backlog that takes most of a short demo to clear. Returns False on timeout."""
        self.client.start()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="demo-watch")
        now = time.time()
        for k in range(history_s):
            self._push_history_second(k, history_s, now - history_s + k + 0.5)
        await self.client.flush()
        # A decision ticked while the history was still arriving saw part of it (too low a rate).
        flushed_ms = time.time() * 1000
        deadline = time.monotonic() + timeout_s
        previous: dict[PoolKey, PoolPlan] | None = None
        seen = ""
        k = history_s
        next_push = time.monotonic() + 1.0
        while time.monotonic() < deadline and not stop.is_set():
            d = self.state.latest
            if (
                d is not None
                and d.id != seen
                and d.pools
                and d.tick_ms >= flushed_ms
                and d.load.arrivals_per_s > 0
            ):
                seen = d.id
                plan = plan_of(d)
                if plan == previous:
                    self._applied = d.id
                    self.dp.apply(plan, 0.0, ready=True)
                    return True
                previous = plan
            if time.monotonic() >= next_push:
                self._push_history_second(k, history_s, time.time())
                k += 1
                next_push += 1.0
            await asyncio.sleep(0.1)
        self.state.notes.append(
            f"the decisions did not settle on the warm-up history within {timeout_s:.0f} s"
        )
        return False

    async def run(
        self, on_second: Callable[[Second], None] | None = None, stop: asyncio.Event | None = None
    ) -> ReplayState:
        stop = stop or asyncio.Event()
        self.client.start()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="demo-watch")
        watcher = self._watcher
        wall0 = time.time()
        t0 = time.monotonic()
        try:
            for sec in range(self.duration_s):
                if stop.is_set():
                    break
                latest = self.state.latest
                if latest is not None and latest.id != self._applied and latest.pools:
                    self._applied = latest.id
                    drain = {pool_key_of(p.pool): p.draining_replicas for p in latest.pools}
                    self.dp.apply(plan_of(latest), float(sec), draining=drain)
                stats, new = self._step(sec)
                now = float(sec + 1)
                self._push(stats, new, wall0, now)
                self._ttft.append([(ms, 1) for _, ms in stats.ttft])
                self._tbt.append([(ms, n) for _, ms, n in stats.tbt])
                desired, running, gpus = await self._replicas()
                ttft = _p99([x for s in self._ttft[-LATENCY_WINDOW_S:] for x in s])
                tbt = _p99([x for s in self._tbt[-LATENCY_WINDOW_S:] for x in s])
                row = Second(
                    t_s=now,
                    arrivals=len(new),
                    input_tokens=int(self.req.input_tokens[new].sum()) if len(new) else 0,
                    output_tokens=int(self.req.output_tokens[new].sum()) if len(new) else 0,
                    decode_tps=stats.decode_tokens,
                    prefill_tps=stats.prefill_tokens,
                    in_system=self.dp.in_system,
                    ttft_p99_ms=ttft,
                    tbt_p99_ms=tbt,
                    decided={str(k): v.replicas for k, v in plan_of(latest).items()} if latest else {},
                    desired=desired,
                    running=running,
                    sim_replicas={str(k): len(p.replicas) for k, p in self.dp.pools.items()},
                    gpus_operator=gpus,
                    gpus_plan_operator=int(latest.prediction.gpus) if latest is not None else 0,
                    gpus_model_level=model_level_gpus(self.spec, latest) if latest is not None else None,
                    decisions=self.state.decisions,
                    decision_id=latest.id if latest is not None else "",
                )
                self.state.rows.append(row)
                if on_second is not None:
                    on_second(row)
                # Lockstep with the wall clock: sleep to the next second (skip ahead if we fell behind).
                delay = t0 + sec + 1 - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                elif delay < -2:
                    self.state.notes.append(
                        f"second {sec}: the replay ran {-delay:.1f} s behind the wall clock"
                    )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await watcher
            await self.client.close()
        if not math.isfinite(self.trace.duration_s):
            self.state.notes.append("empty trace")
        return self.state
