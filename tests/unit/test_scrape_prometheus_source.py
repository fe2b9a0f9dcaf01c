"""The Prometheus source's queries and its refusal to add two models together (against a fake
Prometheus HTTP API; tests/component/test_ingest_prometheus.py runs it against a real server)."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry

from opscale.clock import VirtualClock
from opscale.config import PrometheusSource
from opscale.services.ingest.app import IngestApp
from opscale.services.ingest.metrics import IngestMetrics
from opscale.services.ingest.prometheus import PrometheusScraper
from opscale.services.ingest.shard import MemoryScrapeState


def scraper(answer: dict[str, list[dict[str, Any]]], asked: list[str]) -> PrometheusScraper:
    async def fetch(url: str, timeout_s: float) -> str:
        query = parse_qs(urlsplit(url).query)["query"][0]
        asked.append(query)
        result = next((r for prefix, r in answer.items() if query.startswith(prefix)), [])
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})

    source = PrometheusSource(deployment="chat", role="serving", engine="vllm", selector='{job="vllm"}')
    return PrometheusScraper(
        source, "http://prom:9090", cast(IngestApp, None), VirtualClock(), IngestMetrics(CollectorRegistry()),
        MemoryScrapeState(), interval_s=5.0, max_gap_s=300.0, fetch=fetch,
    )  # fmt: skip


def vector(*items: tuple[dict[str, str], float]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [0, str(v)]} for labels, v in items]


async def test_a_selector_matching_two_models_is_refused() -> None:
    asked: list[str] = []
    s = scraper({"sum by (model_name)": vector(({"model_name": "a"}, 3), ({"model_name": "b"}, 4))}, asked)
    assert not await s.scrape_once()
    assert s.health.last_error is not None
    assert "matches models a, b" in s.health.last_error and 'model_name="…"' in s.health.last_error
    assert 'sum by (model_name) (vllm:num_requests_running{job="vllm"})' in asked


async def test_the_selector_is_merged_into_every_query() -> None:
    asked: list[str] = []
    s = scraper({"sum by (model_name)": vector(({"model_name": "a"}, 3))}, asked)
    assert await s.scrape_once()  # the first read is a baseline: gauges only
    assert 'max by (engine) (vllm:kv_cache_usage_perc{job="vllm"})' in asked
    assert all('{job="vllm"' in q for q in asked)
