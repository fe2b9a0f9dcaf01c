"""Prometheus metrics of the placement service: what an SRE watches to see desired vs running.

Gauges are set from one read of the inventory at the end of every reconcile pass (so a scrape costs
nothing and never touches the database); agent connections and reconcile lag are read at scrape time.
Registered once per telemetry registry (``placement_metrics``): several placement services in one
process (tests) share a registry and so share these; the last one started feeds the scrape-time gauges.
"""

from __future__ import annotations

import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from opscale.db.records import NodeRecord, ReplicaRecord
from opscale.db.status import NodeStatus, ReplicaDesired, ReplicaObserved

_POOL = ["deployment", "stage", "operator"]


class PlacementMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas_desired = Gauge(
            "opscale_placement_replicas_desired",
            "Replicas placement wants running (desired RUNNING), per pool",
            _POOL,
            registry=registry,
        )
        self.replicas_ready = Gauge(
            "opscale_placement_replicas_ready",
            "Replicas observed READY on their agents, per pool",
            _POOL,
            registry=registry,
        )
        self.replicas_draining = Gauge(
            "opscale_placement_replicas_draining",
            "Replicas out of routing and draining before they stop, per pool",
            _POOL,
            registry=registry,
        )
        self.gpus = Gauge(
            "opscale_placement_gpus",
            "GPUs in the inventory of schedulable and cordoned nodes, by whether a replica holds them",
            ["state"],
            registry=registry,
        )
        self.nodes = Gauge("opscale_placement_nodes", "Nodes by status", ["status"], registry=registry)
        self.agent_connections = Gauge(
            "opscale_placement_agent_connections",
            "Agent streams connected to this process",
            registry=registry,
        )
        self.reconcile_lag = Gauge(
            "opscale_placement_reconcile_lag_seconds",
            "Seconds since the last completed reconcile pass (grows when the reconciler is stuck)",
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            "opscale_placement_reconcile_duration_seconds",
            "Time one reconcile pass took",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.pool_shortfall = Gauge(
            "opscale_placement_pool_shortfall_replicas",
            "Replicas a pool's target asks for that are not READY (target minus READY), per pool; "
            "opscale describe deployment says why when placement knows",
            _POOL,
            registry=registry,
        )
        self._short_pools: set[tuple[str, str, str]] = set()
        self.superseded_replicas = Counter(
            "opscale_placement_superseded_replicas",
            "Replicas found still running on a node that returned after it was judged lost (their "
            "replacements already ran elsewhere); each is stopped at once",
            registry=registry,
        )
        self._pools: set[tuple[str, str, str]] = set()

    def watch(self, connections: Callable[[], int], seconds_since_pass: Callable[[], float]) -> None:
        self.agent_connections.set_function(lambda: float(connections()))
        self.reconcile_lag.set_function(seconds_since_pass)

    def observe(self, nodes: Iterable[NodeRecord], replicas: Iterable[ReplicaRecord]) -> None:
        desired: Tally[tuple[str, str, str]] = Tally()
        ready: Tally[tuple[str, str, str]] = Tally()
        draining: Tally[tuple[str, str, str]] = Tally()
        held: set[tuple[str, int]] = set()
        for r in replicas:
            pool = (r.deployment, r.stage, r.operator)
            desired[pool] += r.desired_state is ReplicaDesired.RUNNING
            ready[pool] += r.observed_state is ReplicaObserved.READY
            draining[pool] += r.desired_state is ReplicaDesired.DRAINING
            if r.node is not None and r.desired_state is not ReplicaDesired.STOPPED:
                held.update((r.node, index) for index in r.gpu_indices)
        # Pools that disappeared are reported as 0 once, then dropped, so dashboards see them go.
        pools = set(desired) | set(ready) | set(draining)
        for pool in self._pools - pools:
            for gauge in (self.replicas_desired, self.replicas_ready, self.replicas_draining):
                gauge.remove(*pool)
        self._pools = pools
        for pool in pools:
            self.replicas_desired.labels(*pool).set(desired[pool])
            self.replicas_ready.labels(*pool).set(ready[pool])
            self.replicas_draining.labels(*pool).set(draining[pool])
        by_status: Tally[NodeStatus] = Tally()
        total = allocated = 0
        for node in nodes:
            by_status[node.status] += 1
            if node.status in (NodeStatus.LOST, NodeStatus.DECOMMISSIONED):
                continue
            total += len(node.gpus)
            allocated += sum((node.name, gpu.index) in held for gpu in node.gpus)
        for status in NodeStatus:
            self.nodes.labels(status.value).set(by_status[status])
        self.gpus.labels("allocated").set(allocated)
        self.gpus.labels("free").set(total - allocated)

    def observe_shortfalls(self, short: dict[tuple[str, str, str], int]) -> None:
        for pool in self._short_pools - set(short):
            self.pool_shortfall.remove(*pool)
        self._short_pools = set(short)
        for pool, n in short.items():
            self.pool_shortfall.labels(*pool).set(n)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, PlacementMetrics] = weakref.WeakKeyDictionary()


def placement_metrics(registry: CollectorRegistry) -> PlacementMetrics:
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = _BY_REGISTRY[registry] = PlacementMetrics(registry)
    return found
