"""Prometheus metrics of the decision loop, registered once per telemetry registry (several decision
services in one process — tests, ``opscale up`` — share a registry and so share these).

Per deployment (``opscale_deployment_*``) and per pool (``opscale_pool_*``): the load the latest
decision saw, its latency against the SLO, the counts it decided, and how long ago that was. Set by the
replica that leads the deployment at each decision; removed when it stops leading it, so a scrape of
every decision replica sums to one series per deployment. Placement exports what it placed and what is
ready under the same pool labels (``opscale_placement_replicas_desired`` / ``_ready``).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from opscale.clock import Clock
from opscale.decisions.record import DecisionView
from opscale.policy.types import SLO, LoadWindow, PolicyOutput
from opscale.signals.load import share_at_most
from opscale.signals.summary import WindowSummary

_DEPLOYMENT = ["deployment"]
_POOL = ["deployment", "stage", "operator"]


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


class DeploymentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.arrival_rate = Gauge(
            "opscale_deployment_arrival_rate",
            "Requests arriving per second over the decision's window",
            _DEPLOYMENT,
            registry=registry,
        )
        self.decode_tps = Gauge(
            "opscale_deployment_decode_tokens_per_second",
            "Output tokens generated per second (window)",
            _DEPLOYMENT,
            registry=registry,
        )
        self.prefill_tps = Gauge(
            "opscale_deployment_prefill_tokens_per_second",
            "Prompt tokens computed (cache misses) per second (window)",
            _DEPLOYMENT,
            registry=registry,
        )
        self.ttft_p99 = Gauge(
            "opscale_deployment_ttft_p99_seconds",
            "Observed p99 time to first token",
            _DEPLOYMENT,
            registry=registry,
        )
        self.tbt_p99 = Gauge(
            "opscale_deployment_tbt_p99_seconds",
            "Observed p99 time between tokens",
            _DEPLOYMENT,
            registry=registry,
        )
        self.ttft_slo = Gauge(
            "opscale_deployment_ttft_slo_seconds",
            "The SLO's time-to-first-token target",
            _DEPLOYMENT,
            registry=registry,
        )
        self.tbt_slo = Gauge(
            "opscale_deployment_tbt_slo_seconds",
            "The SLO's time-between-tokens target",
            _DEPLOYMENT,
            registry=registry,
        )
        self.attainment = Gauge(
            "opscale_deployment_slo_attainment_ratio",
            "Share of the window's observations within the SLO target, per signal (ttft, tbt)",
            ["deployment", "signal"],
            registry=registry,
        )
        self.attainment_target = Gauge(
            "opscale_deployment_slo_attainment_target_ratio",
            "The share the SLO asks for (its percentile / 100): attainment below it misses the SLO",
            _DEPLOYMENT,
            registry=registry,
        )
        self.lag = Gauge(
            "opscale_deployment_decision_lag_seconds",
            "Seconds since the tick slot of the latest decision (grows when decisions stop)",
            _DEPLOYMENT,
            registry=registry,
        )
        self.replicas = Gauge(
            "opscale_pool_replicas_decided",
            "Replicas the latest decision asks for, per pool",
            _POOL,
            registry=registry,
        )
        self.draining = Gauge(
            "opscale_pool_replicas_draining_decided",
            "Replicas the latest decision keeps draining (out of routing), per pool",
            _POOL,
            registry=registry,
        )
        self.gpus = Gauge(
            "opscale_pool_gpus_decided",
            "GPUs the latest decision's replicas take, per pool",
            _POOL,
            registry=registry,
        )
        self._pools: dict[str, set[tuple[str, str]]] = {}
        self._slots: dict[str, float] = {}  # deployment -> latest decision's tick slot, epoch seconds
        self._clock: Clock | None = None

    def _per_deployment(self) -> tuple[Gauge, ...]:
        return (
            self.arrival_rate,
            self.decode_tps,
            self.prefill_tps,
            self.ttft_p99,
            self.tbt_p99,
            self.ttft_slo,
            self.tbt_slo,
            self.attainment_target,
            self.lag,
        )

    def observe(
        self,
        view: DecisionView,
        load: LoadWindow,
        out: PolicyOutput,
        slo: SLO,
        summary: WindowSummary | None,
        clock: Clock,
    ) -> None:
        name = view.deployment
        self.arrival_rate.labels(name).set(load.arrival_rate_rps)
        self.decode_tps.labels(name).set(load.decode_tps)
        self.prefill_tps.labels(name).set(load.prefill_uncached_tps)
        ms = 1000.0
        self.ttft_p99.labels(name).set(_nan(load.ttft_p99_ms) / ms)
        self.tbt_p99.labels(name).set(_nan(load.tbt_p99_ms) / ms)
        self.ttft_slo.labels(name).set(slo.ttft_ms / ms)
        self.tbt_slo.labels(name).set(slo.tbt_ms / ms)
        self.attainment_target.labels(name).set(slo.percentile / 100.0)
        if summary is not None:
            self.attainment.labels(name, "ttft").set(_nan(share_at_most(summary.ttft_ms, slo.ttft_ms)))
            self.attainment.labels(name, "tbt").set(_nan(share_at_most(summary.tbt_ms, slo.tbt_ms)))
        self._slots[name] = view.tick_at.timestamp()
        self._clock = clock
        if name not in self._pools:
            self.lag.labels(name).set_function(lambda: self._lag(name))
        pools = {(str(p.stage), str(p.operator)) for p in (*out.desired, *out.draining)}
        for gone in self._pools.get(name, set()) - pools:
            for g in (self.replicas, self.draining, self.gpus):
                g.remove(name, *gone)
        self._pools[name] = pools
        for pool in out.desired.keys() | out.draining.keys():
            plan = out.desired.get(pool)
            labels = (name, str(pool.stage), str(pool.operator))
            replicas = plan.replicas if plan is not None else 0
            self.replicas.labels(*labels).set(replicas)
            self.draining.labels(*labels).set(out.draining.get(pool, 0))
            gpus = replicas * plan.gpus_per_replica * plan.gpu_share if plan is not None else 0.0
            self.gpus.labels(*labels).set(gpus)

    def _lag(self, deployment: str) -> float:
        slot = self._slots.get(deployment)
        if slot is None or self._clock is None:
            return math.nan
        return max(0.0, self._clock.now() - slot)

    def forget(self, deployment: str) -> None:
        """This replica no longer leads ``deployment``: its series go (the new leader sets its own)."""
        pools = self._pools.pop(deployment, None)
        self._slots.pop(deployment, None)
        if pools is None:
            return
        for g in self._per_deployment():
            with contextlib.suppress(KeyError):
                g.remove(deployment)
        for signal in ("ttft", "tbt"):
            with contextlib.suppress(KeyError):
                self.attainment.remove(deployment, signal)
        for pool in pools:
            for g in (self.replicas, self.draining, self.gpus):
                g.remove(deployment, *pool)


@dataclass(frozen=True)
class LoopMetrics:
    decisions: Counter  # by policy and placement outcome
    tick_seconds: Histogram
    leases_held: Gauge  # by replica
    placement_failures: Counter
    deployment_errors: Counter  # by stage: spec, load, policy, record
    deployments: DeploymentMetrics


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, LoopMetrics] = weakref.WeakKeyDictionary()


def loop_metrics(registry: CollectorRegistry) -> LoopMetrics:
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = LoopMetrics(
            decisions=Counter(
                "opscale_decisions", "Decisions recorded", ["policy", "outcome"], registry=registry
            ),
            tick_seconds=Histogram(
                "opscale_decision_tick_seconds",
                "Wall time of one decision-loop tick over every due deployment",
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
                registry=registry,
            ),
            leases_held=Gauge(
                "opscale_decision_leases_held",
                "Deployments this replica leads",
                ["replica"],
                registry=registry,
            ),
            placement_failures=Counter(
                "opscale_decision_placement_handoff_failures",
                "Hand-offs to placement that failed",
                registry=registry,
            ),
            deployment_errors=Counter(
                "opscale_decision_deployment_errors",
                "Deployments skipped in a tick by an error",
                ["stage"],
                registry=registry,
            ),
            deployments=DeploymentMetrics(registry),
        )
        _BY_REGISTRY[registry] = found
    return found
