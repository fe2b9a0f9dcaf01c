"""Metrics-ingest's own Prometheus metrics, on the process's injected registry."""

from __future__ import annotations

import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from opscale import errors

# Rejection reasons: the error class that refused the batch, in words an operator searches for.
REASONS: dict[type[errors.OpscaleError], str] = {
    errors.InvalidArgument: "invalid",
    errors.NotFound: "unknown_deployment",
    errors.ResourceExhausted: "too_large",
    errors.Unavailable: "unavailable",
}


def reason_for(exc: errors.OpscaleError) -> str:
    for cls in type(exc).__mro__:
        if cls in REASONS:
            return REASONS[cls]
    return "other"


class IngestMetrics:
    """``source`` is push (PushSamples), stream (StreamSamples), scrape or prometheus. One set per
    registry: use ``IngestMetrics.of(registry)``, since prometheus_client refuses to register a name
    twice."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> IngestMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter(
            "opscale_ingest_samples_accepted",
            "Samples counted into the windows",
            ["source"],
            registry=registry,
        )
        self.batches = Counter(
            "opscale_ingest_batches_accepted",
            "Batches applied (duplicates excluded)",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "opscale_ingest_batches_rejected",
            "Batches refused whole, by reason (invalid, unknown_deployment, too_large, unavailable)",
            ["source", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "opscale_ingest_duplicate_batches",
            "Batches whose batch_id was applied before: acknowledged, not counted again",
            ["source"],
            registry=registry,
        )
        self.latency = Histogram(
            "opscale_ingest_push_duration_seconds",
            "Time to validate and apply one batch",
            ["source"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        # Scrape targets, labelled by URL, deployment and role (a handful per process).
        labels = ["target", "deployment", "role"]
        self.scrape_up = Gauge(
            "opscale_ingest_scrape_up",
            "1 if the last scrape of the target succeeded",
            labels,
            registry=registry,
        )
        self.scrape_last_success = Gauge(
            "opscale_ingest_scrape_last_success_timestamp_seconds",
            "When the target was last scraped successfully (0: never)",
            labels,
            registry=registry,
        )
        self.scrape_failures = Gauge(
            "opscale_ingest_scrape_consecutive_failures",
            "Scrapes of the target that failed in a row",
            labels,
            registry=registry,
        )
        self.scrapes = Counter(
            "opscale_ingest_scrapes",
            "Scrapes, by outcome (ok, error)",
            [*labels, "outcome"],
            registry=registry,
        )
        self.scrape_unmatched = Gauge(
            "opscale_ingest_scrape_unmatched_models",
            "1 for each model an endpoint serves that no scrape target maps to a deployment (left out)",
            ["target", "model"],
            registry=registry,
        )
        self.scrape_kv_usage = Gauge(
            "opscale_ingest_scrape_kv_usage_fraction",
            "KV-cache use of each engine (data-parallel rank) of a scraped model, at the last scrape",
            ["target", "model", "engine"],
            registry=registry,
        )
        self.scrape_arrivals_source = Gauge(
            "opscale_ingest_scrape_arrivals_source",
            "1 for how a scraped target's arrivals are counted: counter (the engine counts received "
            "requests) or conservation (finished + change in running and waiting)",
            [*labels, "source"],
            registry=registry,
        )
        self.counter_resets = Counter(
            "opscale_ingest_scrape_counter_resets",
            "Engine counters seen going backwards (an engine restart)",
            labels,
            registry=registry,
        )
