"""Turning vLLM and SGLang Prometheus ``/metrics`` into load samples — pure: text in, samples out.

``parse_exposition`` (text -> values), ``detect_engine`` / ``read_engine`` (values -> one
engine-neutral ``EngineReading``), ``derive_samples`` (two readings -> samples, across counter
resets). The network loop that feeds them lives in ``services/ingest/scrape.py``.
"""

from opscale.scrape.delta import Derived, derive_samples, histogram_runs
from opscale.scrape.engines import NAMES, Engine, EngineNames, EngineReading, detect_engine, read_engine
from opscale.scrape.parse import Exposition, ExpositionError, HistogramValue, parse_exposition

__all__ = [
    "NAMES",
    "Derived",
    "Engine",
    "EngineNames",
    "EngineReading",
    "Exposition",
    "ExpositionError",
    "HistogramValue",
    "derive_samples",
    "detect_engine",
    "histogram_runs",
    "parse_exposition",
    "read_engine",
]
