"""Turning vLLM and SGLang Prometheus ``/metrics`` into load samples — pure: text in, samples out.

``parse_exposition`` (text -> values), ``detect_engine`` / ``read_models`` (values -> one
engine-neutral ``EngineReading`` per model on the endpoint), ``derive_samples`` (two readings ->
samples, across restarts and gaps), ``spread`` (engine histogram deltas -> store observations) and
``codec`` (a target's state to and from JSON, so scraper replicas can hand a target over). The network loops
that feed them live in ``opscale/services/ingest/``.
"""

from opscale.scrape.codec import state_from_json, state_to_json
from opscale.scrape.delta import DEFAULT_MAX_GAP_S, Carry, Derived, derive_samples, restarted
from opscale.scrape.engines import (
    NAMES,
    Engine,
    EngineNames,
    EngineReading,
    detect_engine,
    models_of,
    read_model,
    read_models,
)
from opscale.scrape.parse import Exposition, ExpositionError, HistogramValue, parse_exposition
from opscale.scrape.spread import HistogramDelta, histogram_delta, spread

__all__ = [
    "DEFAULT_MAX_GAP_S",
    "NAMES",
    "Carry",
    "Derived",
    "Engine",
    "EngineNames",
    "EngineReading",
    "Exposition",
    "ExpositionError",
    "HistogramDelta",
    "HistogramValue",
    "derive_samples",
    "detect_engine",
    "histogram_delta",
    "models_of",
    "parse_exposition",
    "read_model",
    "read_models",
    "restarted",
    "spread",
    "state_from_json",
    "state_to_json",
]
