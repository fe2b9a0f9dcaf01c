"""Placement's Prometheus gauges: desired vs ready vs draining per pool, GPUs held, nodes by status."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from opscale.db.records import GpuRecord, NodeRecord, ReplicaRecord
from opscale.db.status import NodeStatus, ReplicaDesired, ReplicaObserved
from opscale.services.placement.metrics import PlacementMetrics

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def node(name: str, status: NodeStatus, gpus: int) -> NodeRecord:
    return NodeRecord(
        name=name, status=status, labels={}, agent_session_id="s", last_heartbeat_at=T0, registered_at=T0,
        status_changed_at=T0, version=1,
        gpus=tuple(
            GpuRecord(index=i, uuid=f"{name}-{i}", gpu_type="H100", memory_bytes=80 << 30)
            for i in range(gpus)
        ),
    )  # fmt: skip


def replica(rid: str, op: str, gpus: tuple[int, ...], desired: ReplicaDesired, observed: ReplicaObserved,
            where: str | None = "a") -> ReplicaRecord:  # fmt: skip
    return ReplicaRecord(
        id=rid, deployment="chat", stage="decode", operator=op, node=where, gpu_indices=gpus,
        desired_state=desired, observed_state=observed, generation=1, version=1, status_history=(),
        created_at=T0, updated_at=T0,
    )  # fmt: skip


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_observe_counts_pools_gpus_and_nodes() -> None:
    registry = CollectorRegistry()
    metrics = PlacementMetrics(registry)
    R, D = ReplicaDesired, ReplicaObserved
    metrics.observe(
        [node("a", NodeStatus.READY, 8), node("b", NodeStatus.CORDONED, 4), node("c", NodeStatus.LOST, 8)],
        [
            replica("r1", "attention", (0, 1), R.RUNNING, D.READY),
            replica("r2", "attention", (2,), R.RUNNING, D.STARTING),
            replica("r3", "attention", (2,), R.DRAINING, D.DRAINING),  # shares GPU 2 with r2
            replica("r4", "ffn", (3,), R.STOPPED, D.STOPPED),  # holds nothing any more
            replica("r5", "ffn", (), R.RUNNING, D.PENDING, where=None),  # not placed yet
        ],
    )
    pool = {"deployment": "chat", "stage": "decode", "operator": "attention"}
    assert value(registry, "opscale_placement_replicas_desired", **pool) == 2  # r1, r2
    assert value(registry, "opscale_placement_replicas_ready", **pool) == 1  # r1
    assert value(registry, "opscale_placement_replicas_draining", **pool) == 1  # r3
    # GPUs of node a held: 0, 1 (r1) and 2 (r2 and r3 share it) = 3; a lost node's GPUs do not count:
    # total = 8 (a) + 4 (b, cordoned but still in the inventory) = 12, so 9 free.
    assert value(registry, "opscale_placement_gpus", state="allocated") == 3
    assert value(registry, "opscale_placement_gpus", state="free") == 9
    assert value(registry, "opscale_placement_nodes", status="ready") == 1
    assert value(registry, "opscale_placement_nodes", status="lost") == 1
    assert value(registry, "opscale_placement_nodes", status="draining") == 0

    # The attention pool goes away: its series are removed, not left at their last value.
    metrics.observe([node("a", NodeStatus.READY, 8)], [replica("r5", "ffn", (0,), R.RUNNING, D.READY)])
    assert value(registry, "opscale_placement_replicas_desired", **pool) is None
    assert value(registry, "opscale_placement_gpus", state="allocated") == 1


def test_scrape_time_gauges_follow_their_sources() -> None:
    registry = CollectorRegistry()
    metrics = PlacementMetrics(registry)
    state: dict[str, float] = {"connections": 3, "lag": 0.5}
    metrics.watch(lambda: int(state["connections"]), lambda: state["lag"])
    assert value(registry, "opscale_placement_agent_connections") == 3
    state.update(connections=0, lag=7.0)
    assert value(registry, "opscale_placement_agent_connections") == 0
    assert value(registry, "opscale_placement_reconcile_lag_seconds") == 7.0
