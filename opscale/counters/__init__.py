"""Hot-counter store: the ``CounterStore`` port, its Redis implementation and its in-process twin."""

from opscale.counters.base import (
    DEFAULT_HISTOGRAM,
    CounterStore,
    CounterWrite,
    GaugeWrite,
    HistogramBin,
    HistogramLayout,
    HistogramWrite,
    Kind,
    ReadQuery,
    SeriesKey,
    StoreSettings,
    WindowRead,
    Write,
    WriteBatch,
)
from opscale.counters.factory import make_counter_store
from opscale.counters.memory import InMemoryCounterStore
from opscale.counters.redis import RedisCounterStore

__all__ = [
    "DEFAULT_HISTOGRAM",
    "CounterStore",
    "CounterWrite",
    "GaugeWrite",
    "HistogramBin",
    "HistogramLayout",
    "HistogramWrite",
    "InMemoryCounterStore",
    "Kind",
    "ReadQuery",
    "RedisCounterStore",
    "SeriesKey",
    "StoreSettings",
    "WindowRead",
    "Write",
    "WriteBatch",
    "make_counter_store",
]
