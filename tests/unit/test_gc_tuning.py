"""tune_gc: the start-up heap is frozen and the thresholds applied; None leaves CPython's defaults."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from opscale.grpcutil.server import tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_thresholds_applied_and_heap_frozen(restore_gc: None) -> None:
    tune_gc((40_000, 20, 30))
    assert gc.get_threshold() == (40_000, 20, 30)
    assert gc.get_freeze_count() > 0  # objects alive at start-up are out of the collector's sight


def test_none_changes_nothing(restore_gc: None) -> None:
    before = gc.get_threshold()
    tune_gc(None)
    assert gc.get_threshold() == before
