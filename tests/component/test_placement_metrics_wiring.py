"""The running placement service exports its gauges from the reconcile loop."""

from __future__ import annotations

import asyncio

from opscale.services.runtime import Runtime
from tests.component.conftest import Serve


async def test_reconcile_passes_feed_the_metrics(serve: Serve, runtime: Runtime) -> None:
    await serve("placement")
    registry = runtime.telemetry.registry
    for _ in range(100):  # the reconciler passes every reconcile_interval_s (1 s by default)
        passes = registry.get_sample_value("opscale_placement_reconcile_duration_seconds_count")
        if passes:
            break
        await asyncio.sleep(0.1)
    assert passes and passes >= 1
    assert registry.get_sample_value("opscale_placement_agent_connections") == 0
    assert registry.get_sample_value("opscale_placement_gpus", {"state": "allocated"}) == 0
    lag = registry.get_sample_value("opscale_placement_reconcile_lag_seconds")
    assert lag is not None and 0 <= lag < 5
