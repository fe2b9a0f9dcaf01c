"""Engine /metrics text the scraper has never seen: hypothesis mutates vLLM and SGLang expositions (lines
dropped, repeated, swapped or cut; values NaN, ±Inf, negative, huge or not numbers; bucket bounds
garbled; stray text) and the ingest service's own scraper (``EndpointScraper.scrape_once``, with an
in-memory counter store and scrape state) scrapes two of them in turn: parse, engine detection, per-model
reading, samples derived against the previous reading, the push with its validation, the state kept.
A scrape may fail (reported in the target's health); nothing may raise out of it. ValueError,
OverflowError and ZeroDivisionError did (four found this way) and would end the scrape loop's task.
``make fuzz`` runs it at scale."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from opscale.clock import VirtualClock
from opscale.config import ScrapeTarget
from opscale.counters.memory import InMemoryCounterStore
from opscale.services.ingest.app import IngestApp
from opscale.services.ingest.deployments import DeploymentDirectory
from opscale.services.ingest.metrics import IngestMetrics
from opscale.services.ingest.scrape import EndpointScraper
from opscale.services.ingest.shard import MemoryScrapeState
from opscale.services.ingest.targets import group_targets
from opscale.signals import read_window_summary, store_settings
from tests.fixtures.metrics.enginesim import T0, EngineSim
from tests.fuzz_budget import examples, report

OUTCOMES: Counter[str] = Counter()
GAP_S = 15.0
VALUES = ["NaN", "+Inf", "-Inf", "-1", "-0", "0", "1e308", "1e12", "4.2e-320", "x", "", "0x10", "1_000"]
BOUNDS = ['le="abc"', 'le="NaN"', 'le="-Inf"', 'le="1e999"', 'le=""', 'le="+Inf"', 'le="0"']


URL, MODELS = "http://engine:8000/metrics", ("llama", "qwen")


@functools.cache
def base(kind: str, dp: int) -> tuple[list[str], list[str]]:
    """Two expositions of one simulated engine, ``GAP_S`` apart, as lines."""
    sim = EngineSim(kind, models=MODELS, horizon_s=90, dp=dp, seed=11)
    return sim.exposition_at(T0 + 40).splitlines(), sim.exposition_at(T0 + 40 + GAP_S).splitlines()


def _mutate(lines: list[str], ops: list[tuple[int, int, int, int]]) -> str:
    out = list(lines)
    for op, i, j, k in ops:
        if not out:
            break
        i, j = i % len(out), j % len(out)
        if op == 0:
            del out[i]
        elif op == 1:
            out.insert(j, out[i])
        elif op == 2:
            out[i], out[j] = out[j], out[i]
        elif op == 3 and not out[i].startswith("#"):  # the sample's value
            name, _, _ = out[i].rpartition(" ")
            out[i] = f"{name} {VALUES[k % len(VALUES)]}"
        elif op == 4 and 'le="' in out[i]:
            head, _, tail = out[i].partition('le="')
            out[i] = head + BOUNDS[k % len(BOUNDS)] + tail.partition('"')[2]
        elif op == 5:
            out[i] = out[i][: k % (len(out[i]) + 1)]
        elif op == 6:
            out.insert(i, ["# TYPE x counter", "x 1", "}{", "# EOF", "\x00", 'y{a="b"} 2 3 4'][k % 6])
    return "\n".join(out) + "\n"


class _AnyDeployment:
    """Every deployment exists: the fuzz is about the text, not the directory."""

    async def require(self, name: str, field: str) -> None:
        return None


async def _scrape_both(prev_text: str, cur_text: str, store: InMemoryCounterStore | None = None) -> list[str]:
    """Two scrapes of one endpoint serving both models by the ingest service's own scraper
    (``EndpointScraper.scrape_once``) into ``store``; the outcome of each, as its health reports it."""
    clock = VirtualClock(T0 + 40)
    metrics = IngestMetrics(CollectorRegistry())
    store = InMemoryCounterStore(store_settings()) if store is None else store
    app = IngestApp(store, cast(DeploymentDirectory, _AnyDeployment()), clock, metrics)
    (spec,) = group_targets([ScrapeTarget.model_validate(
        {"url": URL, "deployment": m, "role": "serving", "model_name": m}) for m in MODELS], 1.0)  # fmt: skip
    texts = iter((prev_text, cur_text))

    async def fetch(url: str, timeout_s: float) -> str:
        return next(texts)

    scraper = EndpointScraper(spec, app, clock, metrics, MemoryScrapeState(), max_gap_s=60.0, fetch=fetch)
    out = []
    for _ in range(2):
        ok = await scraper.scrape_once()
        out.append("scraped" if ok else "failed: " + (scraper.health.last_error or "")[:40].split(":")[0])
        clock.advance(GAP_S)
    return out


def _scrape(prev_text: str, cur_text: str) -> list[str]:
    return asyncio.run(_scrape_both(prev_text, cur_text))


ops = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 3, 3, 3, 4, 4, 4, 5, 6]),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
    ),
    max_size=8,
)


@pytest.mark.parametrize(("kind", "dp"), [("vllm", 1), ("vllm", 2), ("sglang", 1), ("sglang", 2)])
@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(prev_ops=ops, cur_ops=ops)
def test_mutated_engine_metrics_fail_only_as_a_failed_scrape(
    kind: str, dp: int, prev_ops: list[tuple[int, int, int, int]], cur_ops: list[tuple[int, int, int, int]]
) -> None:
    prev, cur = base(kind, dp)
    OUTCOMES.update(_scrape(_mutate(prev, prev_ops), _mutate(cur, cur_ops)))


def test_unmutated_expositions_are_scraped_for_both_models() -> None:
    for kind in ("vllm", "sglang"):
        prev, cur = base(kind, 1)
        store = InMemoryCounterStore(store_settings())
        assert asyncio.run(_scrape_both("\n".join(prev), "\n".join(cur), store)) == ["scraped", "scraped"]
        for model in MODELS:  # the second scrape's deltas reached the store, per model
            summary = asyncio.run(
                read_window_summary(store, model, now_s=T0 + 40 + 2 * GAP_S, window_s=30, pools=[])
            )
            assert summary.arrivals > 0 and summary.decode_tokens_per_s > 0, (kind, model)


def teardown_module() -> None:
    report("scrape", OUTCOMES)
