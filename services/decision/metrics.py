"""Prometheus metrics of the decision loop, registered once per telemetry registry (several decision
services in one process — tests, ``opscale up`` — share a registry and so share these)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class LoopMetrics:
    decisions: Counter  # by policy and placement outcome
    tick_seconds: Histogram
    leases_held: Gauge  # by replica
    placement_failures: Counter
    deployment_errors: Counter  # by stage: spec, load, policy, record


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
        )
        _BY_REGISTRY[registry] = found
    return found
