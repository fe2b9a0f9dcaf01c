"""Scraping simulated vLLM and SGLang endpoints through the real ingest path, on both store pairs, and
reading the window back: every derived signal against the simulation's truth, within the tolerances
of tests/fixtures/metrics/check.py (counts and rates 2%, means 5%, percentiles the engine bucket)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.config import ScrapeTarget
from tests.component.conftest import IngestStack, StartIngest
from tests.component.scrape_kit import Endpoint, observed, serve_endpoint, window
from tests.fixtures.metrics.check import compare
from tests.fixtures.metrics.enginesim import T0, EngineSim, Workload

LOAD = Workload(rate_per_s=6.0, slots=40, kv_capacity_tokens=125_000)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async for e in serve_endpoint():
        yield e


def target(
    endpoint: Endpoint, deployment: str = "llama", role: str = "serving", **more: object
) -> ScrapeTarget:
    return ScrapeTarget.model_validate({"url": endpoint.url, "deployment": deployment, "role": role, **more})


async def scraping(start_ingest: StartIngest, *targets: ScrapeTarget, **settings: object) -> IngestStack:
    stack = await start_ingest(list(targets), **settings)
    for name in {t.deployment for t in targets}:
        await stack.create_deployment(name)
    return stack


async def scrape_at(stack: IngestStack, endpoint: Endpoint, sim: EngineSim, times: list[float]) -> None:
    (scraper,) = stack.ingest.loops
    for t in times:
        stack.clock.set(t)
        endpoint.body = sim.exposition_at(t)
        assert await scraper.scrape_once(), scraper.health.last_error  # type: ignore[attr-defined]


SCENARIOS = {
    # name: (simulator arguments, scrape times after T0)
    "steady": ({}, list(range(20, 82, 2))),
    "dp2": ({"dp": 2}, list(range(20, 82, 2))),
    "reset": ({"restarts": [T0 + 40]}, [40, *range(41, 162, 2)]),
    "long-gap": ({}, [20, 170]),
}


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_signals_match_the_truth(
    start_ingest: StartIngest, endpoint: Endpoint, kind: str, scenario: str
) -> None:
    extra, seconds = SCENARIOS[scenario]
    sim = EngineSim(kind, workload=LOAD, horizon_s=seconds[-1] + 10, seed=21, **extra)  # type: ignore[arg-type]
    stack = await scraping(start_ingest, target(endpoint))
    times = [T0 + s for s in seconds]
    await scrape_at(stack, endpoint, sim, times)
    w = await window(stack, "llama", times[0], times[-1] + 1)
    assert compare(kind, observed(w), sim.truth(times[0], times[-1])) == []
    # KV use: each scrape's max over the engines, averaged over the scrapes in the window.
    (pool,) = w.pools
    kv = [max(sim.truth(t, t).kv_by_engine) for t in times]
    assert pool.kv_cache_usage_fraction == pytest.approx(sum(kv) / len(kv), rel=1e-6)
    # How arrivals were counted is on the ingest's /metrics: SGLang counts received requests.
    labels = {"target": endpoint.url, "deployment": "llama", "role": "serving"}
    source = "counter" if kind == "sglang" else "conservation"
    metric = stack.runtime.telemetry.registry.get_sample_value
    assert metric("opscale_ingest_scrape_arrivals_source", {**labels, "source": source}) == 1
    # The same window over the wire.
    reply = await stack.stub.GetWindowSummary(
        pb.GetWindowSummaryRequest(deployment="llama", window_s=w.window_s), timeout=10
    )
    assert (reply.summary.arrivals, reply.summary.ttft_samples) == (w.arrivals, w.ttft_ms.count)


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
async def test_two_models_on_one_endpoint_go_to_their_deployments(
    start_ingest: StartIngest, endpoint: Endpoint, kind: str
) -> None:
    sim = EngineSim(kind, models=("llama", "mistral"), workload=LOAD, horizon_s=90, seed=22)
    stack = await scraping(
        start_ingest,
        target(endpoint, "llama", model_name="llama"),
        target(endpoint, "mistral", model_name="mistral"),
    )
    times = [T0 + s for s in range(20, 82, 2)]
    await scrape_at(stack, endpoint, sim, times)
    for model in ("llama", "mistral"):
        w = await window(stack, model, times[0], times[-1] + 1)
        assert compare(kind, observed(w), sim.truth(times[0], times[-1], model)) == [], model


async def test_models_are_never_merged(start_ingest: StartIngest, endpoint: Endpoint) -> None:
    sim = EngineSim("vllm", models=("llama", "mistral"), horizon_s=30, seed=23)
    stack = await scraping(start_ingest, target(endpoint, "llama"))  # no model_name: ambiguous
    (scraper,) = stack.ingest.loops
    endpoint.body = sim.exposition_at(T0 + 10)
    stack.clock.set(T0 + 10)
    assert not await scraper.scrape_once()
    error = scraper.health.last_error  # type: ignore[attr-defined]
    assert error is not None and "serves models llama, mistral" in error and "--model-name" in error
    w = await window(stack, "llama", T0, T0 + 12)
    assert w.pools == () and w.arrivals == 0  # nothing written

    # Named: mistral, which no target maps, is reported once and left out.
    other = await start_ingest([target(endpoint, "llama", model_name="llama")])  # same database
    (scraper,) = other.ingest.loops
    for t in (T0 + 14, T0 + 16):  # the shared clock is at T0 + 12
        other.clock.set(t)
        endpoint.body = sim.exposition_at(t)
        assert await scraper.scrape_once()
    metric = other.runtime.telemetry.registry.get_sample_value
    assert metric("opscale_ingest_scrape_unmatched_models", {"target": endpoint.url, "model": "mistral"}) == 1


async def test_an_unreachable_target_goes_stale_not_zero(
    start_ingest: StartIngest, endpoint: Endpoint
) -> None:
    sim = EngineSim("vllm", workload=LOAD, horizon_s=40, seed=24)
    stack = await scraping(start_ingest, target(endpoint))
    await scrape_at(stack, endpoint, sim, [T0 + 10, T0 + 12])
    before = await window(stack, "llama", T0 + 10, T0 + 13)
    (scraper,) = stack.ingest.loops
    endpoint.body = None  # 503 from now on
    for second in (13, 14, 15):
        stack.clock.set(T0 + second)
        assert not await scraper.scrape_once()
    health = scraper.health  # type: ignore[attr-defined]
    assert health.consecutive_failures == 3 and health.last_success_s == T0 + 12
    assert health.last_error == "HTTP 503 Service Unavailable"
    w = await window(stack, "llama", T0 + 10, T0 + 16)
    # Nothing was written for the failed scrapes: the same totals, and the queue signal 4 s old.
    assert w.arrivals == before.arrivals
    assert w.staleness_s["queue"] == pytest.approx(4.0)
    metric = stack.runtime.telemetry.registry.get_sample_value
    labels = {"target": endpoint.url, "deployment": "llama", "role": "serving"}
    assert metric("opscale_ingest_scrape_up", labels) == 0
    assert metric("opscale_ingest_scrape_consecutive_failures", labels) == 3
    assert metric("opscale_ingest_scrapes_total", {**labels, "outcome": "error"}) == 3
    assert metric("opscale_ingest_scrape_last_success_timestamp_seconds", labels) == T0 + 12
    endpoint.body = sim.exposition_at(T0 + 16)  # back: the 4 s since the last success are covered
    assert await scraper.scrape_once() and health.consecutive_failures == 0
    w = await window(stack, "llama", T0 + 10, T0 + 17)
    assert compare("vllm", observed(w), sim.truth(T0 + 10, T0 + 16)) == []


async def test_a_target_for_an_unknown_deployment_reports_it(
    start_ingest: StartIngest, endpoint: Endpoint
) -> None:
    stack = await start_ingest([target(endpoint, "ghost")])
    (scraper,) = stack.ingest.loops
    endpoint.body = EngineSim("vllm", horizon_s=20).exposition_at(T0 + 10)
    assert not await scraper.scrape_once()
    assert scraper.health.last_error == "samples[0].deployment: deployment 'ghost' not found"  # type: ignore[attr-defined]


async def test_the_scrapers_run_until_stopped(start_ingest: StartIngest, endpoint: Endpoint) -> None:
    stack = await scraping(start_ingest, target(endpoint, interval_s=0.02))
    endpoint.body = EngineSim("sglang", horizon_s=20).exposition_at(T0 + 10)
    stopping = asyncio.Event()
    task = asyncio.create_task(stack.ingest.manager.run(stopping))
    while endpoint.requests < 3:  # the scheduler runs on the (virtual) monotonic clock
        stack.clock.advance(0.01)
        await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert stack.ingest.loops[0].health.last_success_s is not None  # type: ignore[attr-defined]
