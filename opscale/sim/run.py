"""One simulation: a trace through the data plane with a deployment's policy in the loop.

The policy is built by ``policy_setup(spec)`` — the decision service's own adapter — and called at its
own interval (operator 1 s, model 20 s, utilization/pd 15 s, static 60 s unless the spec says
otherwise) with ``PolicyInput`` assembled as the decision loop assembles it: the window read from the
counter store (``feed.SignalFeed``), ``current`` = the last desired plan, the carried ``PolicyState``.
The desired plan goes to the data plane, which starts replicas (paying start-up time) and drains the
surplus.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from opscale.model import PerfModel, perf_model
from opscale.policy.hybrid import whole_model_unit
from opscale.policy.planner_core import Unit
from opscale.policy.spec_adapter import PolicySetup, policy_setup
from opscale.policy.types import PolicyInput, PolicyState, PoolKey, PoolPlan
from opscale.signals import LatencyKind, Sample
from opscale.sim.accounting import GpuLedger
from opscale.sim.engine import DataPlane, Requests, SimConfig, TickStats
from opscale.sim.feed import SignalFeed
from opscale.sim.traces import Trace
from opscale.spec import DeploymentSpec


@dataclass(slots=True)
class SimResult:
    deployment: str
    policy: str
    trace: str
    gpu_type: str
    horizon_s: float
    requests: Requests
    seconds: np.ndarray  # second index i covers [i, i+1)
    gpus: np.ndarray  # GPUs allocated, sampled at the end of each second
    watts: np.ndarray  # allocated GPUs' draw, mean over the second
    idle_watts_per_gpu: float
    replicas: dict[str, np.ndarray]
    busy: dict[str, np.ndarray]
    arrivals: np.ndarray
    in_system: np.ndarray  # requests in the data plane at the end of each second (engine state)
    tbt_ms: np.ndarray  # every token gap, as (value, count) pairs
    tbt_count: np.ndarray
    actions: int
    decisions: int
    infeasible_ticks: int
    max_gpus_check: int  # largest mismatch between alive and accounted replicas (0: consistent)
    memory_violations: int
    notes: list[str] = field(default_factory=list)


def units_for(perf: PerfModel, pools: tuple[PoolKey, ...]) -> list[Unit]:
    out = []
    for key in pools:
        if key.operator == "model":
            out.append(whole_model_unit(perf, key.stage))
        else:
            out.append(Unit(key, key.stage, (key.operator,)))
    stages = {u.stage for u in out}
    if stages != {"prefill", "decode"}:
        raise ValueError(f"the simulator models disaggregated prefill/decode pools; got {sorted(stages)}")
    order = {"embedding": 0, "attention": 1, "ffn": 2, "experts": 2, "lm_head": 3, "model": 0}
    return sorted(out, key=lambda u: (u.stage != "prefill", order.get(u.pool.operator, 9)))


def simulate(
    spec: DeploymentSpec,
    trace: Trace,
    initial: Mapping[PoolKey, PoolPlan],
    *,
    config: SimConfig | None = None,
    setup: PolicySetup | None = None,
    tail_s: float = 120.0,
    horizon_s: float | None = None,
    window_s: float = 30.0,
    validate_samples: bool = False,
    pool_signals: bool | None = None,
    accounting: str = "placement",
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Replay ``trace`` against ``spec``'s policy. ``initial`` is the plan in force at t=0 (its replicas
    start ready). The run lasts ``horizon_s`` (default: until every request is done, at least the last
    arrival + ``tail_s``). ``accounting``: "placement" (GPUs from ``opscale.placement.place``, sharing
    allowed; see ``accounting``) or "whole" (every replica its own GPUs)."""
    cfg = config or SimConfig()
    setup = setup or policy_setup(spec)
    perf = perf_model(spec.model.shape(), spec.gpu_type)
    policy = setup.policy
    pools = tuple(setup.pools) or tuple(initial)
    req = Requests(trace.arrival_s, trace.input_tokens, trace.output_tokens)
    dp = DataPlane(perf, units_for(perf, pools), req, cfg)
    if pool_signals is None:  # per-pool series only for a policy that reads a per-pool signal
        pool_signals = setup.reads_pools
    feed = SignalFeed(
        spec.name, pools, window_s=window_s, validate=validate_samples, pool_signals=pool_signals
    )
    current: dict[PoolKey, PoolPlan] = {k: v for k, v in initial.items() if k in dp.pools}
    dp.apply(current, 0.0, ready=True)
    ledger = GpuLedger(dp) if accounting == "placement" else None
    state = PolicyState()
    horizon = horizon_s if horizon_s is not None else math.ceil(trace.duration_s + tail_s)
    n_sec = math.ceil(horizon)
    ticks_per_s = max(1, round(1.0 / cfg.tick_s))
    dt = 1.0 / ticks_per_s
    interval = policy.interval_s
    # The first tick waits for one full window: a live loop has history, and a window read over a
    # partly empty store would report a fraction of the rate (a spurious scale-in at start).
    next_decision = interval * math.ceil(window_s / interval - 1e-9)
    keys = [str(k) for k in dp.pools]
    series_reps = {k: np.zeros(n_sec, dtype=np.int32) for k in keys}
    series_busy = {k: np.zeros(n_sec) for k in keys}
    gpus = np.zeros(n_sec, dtype=np.int32)
    watts = np.zeros(n_sec)
    arrivals = np.zeros(n_sec, dtype=np.int32)
    in_sys = np.zeros(n_sec, dtype=np.int32)
    tbt_v: list[float] = []
    tbt_c: list[int] = []
    actions = decisions = infeasible = 0
    worst_acct = 0
    mem_viol = 0
    arr = trace.arrival_s
    ptr = 0
    n = len(trace)
    for sec in range(n_sec):
        stats = TickStats()
        t0 = float(sec)
        new_ids: list[int] = []
        watt_acc = 0.0
        for k in range(ticks_per_s):
            t = t0 + k * dt
            t_end = t0 + (k + 1) * dt
            hi = int(np.searchsorted(arr, t_end, side="left"))
            if hi > ptr:
                ids = np.arange(ptr, hi)
                dp.enqueue(ids)
                new_ids.extend(ids.tolist())
                ptr = hi
            dp.tick(t, t_end, stats)
        mem_viol += _memory_check(dp, t0 + 1.0)
        now = t0 + 1.0
        busy = _busy_fractions(dp, now)
        dp.refresh_power()
        if ledger is not None:
            ledger.reconcile(busy)
            g = ledger.gpus_allocated()
            watt_acc = ledger.watts(busy, now)
            placed = ledger.placed_counts()
            unplaced = ledger.unplaced_gpus
            if not unplaced:
                gap = sum(abs(len(p.replicas) - placed.get(k, 0)) for k, p in dp.pools.items())
                worst_acct = max(worst_acct, gap)
        else:
            g = dp.gpus_allocated()
            watt_acc = dp.watts(busy, now)
        for key, pool in dp.pools.items():
            series_reps[str(key)][sec] = len(pool.replicas)
            series_busy[str(key)][sec] = busy.get(key, 0.0)
        gpus[sec] = g
        watts[sec] = watt_acc
        arrivals[sec] = len(new_ids)
        in_sys[sec] = dp.in_system
        for _, ms, c in stats.tbt:
            tbt_v.append(ms)
            tbt_c.append(c)
        feed.push(_samples(feed, dp, req, new_ids, stats, busy, now, g, watt_acc), now)
        for pool in dp.pools.values():
            pool.busy_s = pool.batch_sum = 0.0
            pool.passes = 0
        if now + 1e-9 >= next_decision:
            next_decision += interval
            load = feed.window(now)
            inp = PolicyInput(
                now_s=now,
                deployment=spec.name,
                load=load,
                current=dict(current),
                slo=setup.slo,
                limits=setup.limits,
                state=state,
                params=setup.params,
            )
            out = policy.decide(inp)
            decisions += 1
            infeasible += bool(out.infeasible)
            state = out.state
            desired = {k: v for k, v in out.desired.items() if k in dp.pools}
            if desired:
                actions += dp.apply(desired, now, draining=out.draining)
                current = dict(out.desired)
        if progress is not None and sec % 60 == 0:
            progress(sec / n_sec)
        if ptr >= n and now >= trace.duration_s and horizon_s is None and not dp.unfinished().any():
            cut = sec + 1
            gpus, watts, arrivals, in_sys = gpus[:cut], watts[:cut], arrivals[:cut], in_sys[:cut]
            series_reps = {k: v[: sec + 1] for k, v in series_reps.items()}
            series_busy = {k: v[: sec + 1] for k, v in series_busy.items()}
            break
    if progress is not None:
        progress(1.0)
    return SimResult(
        deployment=spec.name,
        policy=policy.name,
        trace=trace.name,
        gpu_type=spec.gpu_type,
        horizon_s=float(len(gpus)),
        requests=req,
        seconds=np.arange(len(gpus), dtype=np.float64),
        gpus=gpus,
        watts=watts,
        idle_watts_per_gpu=perf.gpu.idle_watts,
        replicas=series_reps,
        busy=series_busy,
        arrivals=arrivals,
        in_system=in_sys,
        tbt_ms=np.asarray(tbt_v),
        tbt_count=np.asarray(tbt_c, dtype=np.int64),
        actions=actions,
        decisions=decisions,
        infeasible_ticks=infeasible,
        max_gpus_check=worst_acct,
        memory_violations=mem_viol,
    )


def _memory_check(dp: DataPlane, now_s: float) -> int:
    """1 when the KV reserved exceeds the ready holders' capacity."""
    if not dp.running:
        return 0
    return int(float(dp.decode_state.reserved.sum()) > dp.kv_capacity_ready(now_s) + 1.0)


def _busy_fractions(dp: DataPlane, now_s: float) -> dict[PoolKey, float]:
    out = {}
    for key, pool in dp.pools.items():
        ready = sum(1 for r in pool.replicas if r.ready_s <= now_s)
        out[key] = min(1.0, pool.busy_s / ready) if ready else 0.0
    return out


def _samples(
    feed: SignalFeed,
    dp: DataPlane,
    req: Requests,
    new_ids: list[int],
    stats: TickStats,
    busy: Mapping[PoolKey, float],
    now: float,
    gpus: int,
    watts: float,
) -> list[Sample]:
    out: list[Sample] = []
    for i in new_ids:
        out.append(feed.arrival(float(req.arrival_s[i]), int(req.input_tokens[i]), int(req.output_tokens[i])))
    for at, ms in stats.ttft:
        out.append(feed.latency(LatencyKind.TTFT, min(at, now), ms))
    for at, ms, c in stats.tbt:
        out.append(feed.latency(LatencyKind.TBT, min(at, now), ms, c))
    for at, ms in stats.e2e:
        out.append(feed.latency(LatencyKind.E2E, min(at, now), ms))
    at = now - 1e-3  # inside the second that just closed
    queues = dp.queue_lengths()
    kv = dp.kv_use(now) or 0.0
    # Token rates once per stage (the deployment total sums pools): where a real engine counts generated
    # and prefilled tokens, the KV holder and the last prefill pool of the stage's first path.
    counted_decode = dp.decode_paths[0].holder
    counted_prefill = dp.prefill_paths[0].pools[-1]
    for key, pool in dp.pools.items():
        ready = sum(1 for r in pool.replicas if r.ready_s <= now)
        running = dp.running if pool.holder else 0
        if feed.pool_signals:
            out.append(feed.queue(key, at, running, queues.get(key, 0), kv if pool.holder else 0.0))
        if ready and feed.pool_signals:
            b = max(1, round(pool.batch_sum / pool.passes)) if pool.passes else 1
            out.append(feed.busy(key, at, min(busy.get(key, 0.0), 1.0) * ready, float(ready), b))
        if pool is counted_decode:
            out.append(feed.throughput(key, at, stats.decode_tokens, 0.0, 1.0))
        elif pool is counted_prefill:
            out.append(feed.throughput(key, at, 0.0, stats.prefill_tokens, 1.0))
    if gpus:
        util = sum(busy.get(k, 0.0) * sum(r.gpus for r in p.replicas) for k, p in dp.pools.items()) / gpus
        out.append(feed.gpu(at, min(1.0, util), watts / gpus))
    return out
