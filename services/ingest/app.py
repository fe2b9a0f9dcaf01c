"""Metrics-ingest use cases (transport-free)."""

from __future__ import annotations

from dataclasses import dataclass

from opscale.counters import CounterStore
from opscale.errors import Unimplemented

MAX_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class WindowQuery:
    deployment: str
    window_s: float


class IngestApp:
    def __init__(self, counters: CounterStore) -> None:
        self._counters = counters

    async def push(self) -> None:
        raise Unimplemented(
            "pushing samples is not available yet: folding samples into windows is the metrics-ingest "
            "capability, which this build does not include"
        )

    async def window_summary(self, query: WindowQuery) -> None:
        raise Unimplemented(
            f"window summaries for {query.deployment!r} are not available yet: they are computed by the "
            "metrics-ingest capability, which this build does not include"
        )
