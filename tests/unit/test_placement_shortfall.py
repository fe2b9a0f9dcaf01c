"""Pool shortfalls: opened once with the reason placement knows, re-opened when the reason changes,
closed when the pool is READY at its target; a pool merely starting (no reason) is short but not reported."""

from __future__ import annotations

from datetime import timedelta

from opscale.db.records import PoolTargetRecord, ReplicaRecord
from opscale.db.status import ReplicaDesired, ReplicaObserved
from opscale.placement import Infeasible
from opscale.services.placement.shortfall import Shortfalls
from tests.unit.test_placement_metrics import T0, replica

POOL = ("chat", "decode", "attention")


def target(n: int) -> PoolTargetRecord:
    return PoolTargetRecord(
        deployment="chat", stage="decode", operator="attention", replicas=n, demand={}, spec_version=1,
        decision_id=None, version=1, updated_at=T0,
    )  # fmt: skip


def ready(n: int) -> list[ReplicaRecord]:
    return [
        replica(f"r{i}", "attention", (i,), ReplicaDesired.RUNNING, ReplicaObserved.READY) for i in range(n)
    ]


def test_a_shortfall_opens_once_changes_reason_and_closes() -> None:
    s = Shortfalls()
    starting = s.assess([target(3)], ready(1), T0)
    assert starting.short == {POOL: 2} and not starting.opened  # starting, no reason: not reported

    s.note_infeasible([Infeasible("chat", "decode", "attention", 3, 1, "no H100 with 80 GiB free")])
    first = s.assess([target(3)], ready(1), T0)
    [item] = first.opened
    assert (item.target, item.ready, item.since) == (3, 1, T0)
    assert item.reason == "placement fits 1 of 3: no H100 with 80 GiB free"
    assert "runs 1 of 3 replicas" in item.describe()
    again = s.assess([target(3)], ready(0), T0 + timedelta(seconds=5))
    assert not again.opened and s.of("chat")[0].ready == 0 and s.of("chat")[0].since == T0  # said once

    s.note(POOL, "agent on n1 refused the start: template not allowed")
    changed = s.assess([target(3)], ready(0), T0 + timedelta(seconds=9))
    assert [o.reason for o in changed.opened] == ["agent on n1 refused the start: template not allowed"]
    assert s.short_pools("chat") == [POOL] and s.of("other") == []

    met = s.assess([target(3)], ready(3), T0 + timedelta(seconds=20))
    assert [c.pool for c in met.closed] == [POOL] and not met.opened and s.of("") == []
    assert not s.assess([target(3)], ready(1), T0).opened  # the old reason went with the shortfall
