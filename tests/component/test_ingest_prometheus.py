"""Prometheus as a source, against a real Prometheus server (Debian's ``prometheus`` package).

The test starts Prometheus on a free loopback port with a temporary configuration that scrapes a
simulated vLLM endpoint served by the test, reads the endpoint both ways for the same period —
directly and through ``--prometheus-source`` (PromQL ``increase`` over each read's window) — and
checks that the rates agree within 5% (and with the simulation's truth). Under ``CI=true`` a
missing ``prometheus`` binary fails the test; elsewhere it is skipped.

Wall-clock time drives it (Prometheus stamps its samples with it), so the ingest's clock is set to
the wall time before each read; the rates compared come from the store, never from a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from opscale.config import PrometheusSource, ScrapeTarget
from opscale.signals import read_window_summary
from tests.component.conftest import StartIngest
from tests.component.scrape_kit import Endpoint, serve_endpoint
from tests.conftest import IN_CI
from tests.fixtures.metrics.enginesim import EngineSim, Workload

SCRAPE_S = 0.5  # Prometheus' scrape interval
READ_S = 5.0  # how often the Prometheus source reads; the direct scraper reads every second
READS = 6
LOAD = Workload(rate_per_s=20.0, output_median=60.0, slots=64, kv_capacity_tokens=400_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "the prometheus binary is not installed (Debian: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true, so this test fails instead of skipping", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async for e in serve_endpoint():
        yield e


@pytest.fixture
def prometheus(prometheus_binary: str, endpoint: Endpoint, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server scraping ``endpoint`` every 0.5 s; its URL."""
    port = _free_port()
    target = endpoint.url.removeprefix("http://").split("/", 1)[0]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: vllm\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
                if reply.status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"Prometheus did not become ready: {(tmp_path / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _scraped_for(prometheus: str, seconds: float) -> None:
    """Wait (at most 30 s) until Prometheus has scraped the endpoint for ``seconds``."""
    query = urllib.parse.urlencode({"query": f'count_over_time(up{{job="vllm"}}[{round(seconds * 1000)}ms])'})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=2) as reply:
            result = json.loads(reply.read())["data"]["result"]
        if result and float(result[0]["value"][1]) >= seconds / SCRAPE_S - 1:
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"Prometheus did not scrape the endpoint for {seconds} s within 30 s")


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
async def test_prometheus_source_agrees_with_direct_scraping(
    start_ingest: StartIngest, endpoint: Endpoint, prometheus: str
) -> None:
    sim = EngineSim("vllm", workload=LOAD, start_s=time.time() - 30, horizon_s=120, seed=31)
    endpoint.render = lambda: sim.exposition_at(time.time())
    direct = ScrapeTarget.model_validate({"url": endpoint.url, "deployment": "direct", "role": "serving"})
    source = PrometheusSource(deployment="viaprom", role="serving", engine="vllm", selector='{job="vllm"}')
    stack = await start_ingest([direct], prometheus_url=prometheus, prometheus_sources=[source])
    for name in ("direct", "viaprom"):
        await stack.create_deployment(name)
    scraper, reader = stack.ingest.loops
    await _scraped_for(prometheus, READ_S + 1)  # the first window must not start before its data

    async def read_both() -> float:
        # The direct scrape first, so both cover the same span up to this instant.
        stack.clock.set(time.time())
        assert await scraper.scrape_once(), scraper.health.last_error  # type: ignore[attr-defined]
        assert await reader.scrape_once(), reader.health.last_error  # type: ignore[attr-defined]
        return stack.clock.now()

    reads = [await read_both()]
    for _ in range(READS):
        for _ in range(int(READ_S) - 1):
            await asyncio.sleep(1.0)
            stack.clock.set(time.time())
            assert await scraper.scrape_once()
        await asyncio.sleep(1.0)
        reads.append(await read_both())
    # Both sources cover (reads[0], reads[-1]]; every sample of that span is in these buckets.
    start, end = int(reads[0]) + 1, int(reads[-1]) + 1
    w = {
        name: await read_window_summary(stack.runtime.counters, name, now_s=end, window_s=end - start)
        for name in ("direct", "viaprom")
    }
    # Arrivals are stamped at the read that counted them: all of (reads[0], reads[-1]] is in the
    # window. Tokens are spread over the interval each read covers: the part of the first interval
    # before the window's first bucket is outside, so their truth starts at the window.
    arrivals = sim.truth(reads[0], reads[-1]).arrivals
    tokens = sim.truth(start, reads[-1])
    for rate, true in (
        ("arrivals_per_s", arrivals),
        ("decode_tokens_per_s", tokens.decode_tokens),
        ("prefill_tokens_per_s", tokens.prefill_computed_tokens),
    ):
        d, p = getattr(w["direct"], rate), getattr(w["viaprom"], rate)
        assert p == pytest.approx(d, rel=0.05), rate
        assert d * (end - start) == pytest.approx(true, rel=0.02), rate  # direct scraping: the truth
    assert w["viaprom"].ttft_ms.count == pytest.approx(w["direct"].ttft_ms.count, rel=0.05)
    assert w["viaprom"].pools[0].queue_running_mean is not None
