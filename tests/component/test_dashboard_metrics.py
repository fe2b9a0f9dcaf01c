"""The Grafana dashboard against a live scrape: every series its queries name is served by ``opscale up``'s
/metrics (opscale.services.main.serve with every service, a deployment deciding) or by an agent's /metrics.

A family with labels but no series yet is still announced (``# TYPE``), so a metric that only gets
values under load (ingest scrapes, replicas placed) counts as exported as soon as the code registers it.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from opscale.agent.agent import Agent, AgentConfig
from opscale.agent.gpus import FakeGpus
from opscale.agent.metrics import AgentCollector
from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.config import Settings
from opscale.services.catalog import SERVICES
from opscale.services.main import serve
from opscale.services.runtime import prepare_embedded_database
from opscale.telemetry import build_telemetry
from tests.builders import static_spec_pb
from tests.component.decision_kit import eventually
from tests.unit.test_deploy_dashboard import _exprs, referenced_series

SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


def series_of(exposition: str) -> set[str]:
    out: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        out.update(sample.name for sample in family.samples)
        out.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return out


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


async def test_every_dashboard_series_is_served(tmp_path: Path) -> None:
    cfg = Settings(
        database_url=f"sqlite:///{tmp_path}/opscale.db",
        counters_url="memory://",
        metrics_port=0,
        ingest_port=0,
        decision_port=0,
        placement_port=0,
        keda_port=0,
    )
    prepare_embedded_database(cfg.database_url)
    said: list[str] = []
    up = asyncio.create_task(serve(cfg, list(SERVICES.values()), "opscale", said.append))
    try:
        await eventually(lambda: any(line.startswith("opscale ready") for line in said), timeout_s=30)
        decision = re.search(r"decision on [\d.]+:(\d+)", said[0])
        metrics = re.search(r"metrics on (http://\S+/metrics)", said[0])
        assert decision is not None and metrics is not None, said
        async with grpc.aio.insecure_channel(f"127.0.0.1:{decision.group(1)}") as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            spec = static_spec_pb("watched", {"serving/model": 1}, interval_s=1.0, mode="colocated")
            await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=spec), timeout=5)

            async def decided() -> bool:
                reply = await stub.ListDecisions(pb.ListDecisionsRequest(deployment="watched"), timeout=5)
                return bool(reply.decisions)

            await eventually(decided, timeout_s=15)
        scraped = ""

        async def gauges_set() -> bool:  # the loop sets a deployment's gauges just after recording
            nonlocal scraped
            scraped = await asyncio.to_thread(_get, metrics.group(1))
            return 'opscale_deployment_arrival_rate{deployment="watched"}' in scraped

        await eventually(gauges_set, timeout_s=15)
    finally:
        up.cancel()
        await asyncio.gather(up, return_exceptions=True)
    served = series_of(scraped)
    assert 'opscale_deployment_arrival_rate{deployment="watched"}' in scraped  # a deployment's gauges

    agent = Agent(
        AgentConfig(node="n1", placement_address="127.0.0.1:1", state_dir=tmp_path / "agent", templates={}),
        FakeGpus("1xH100", "n1"),
    )
    telemetry = build_telemetry("opscale-agent")
    telemetry.registry.register(AgentCollector(agent))
    served |= series_of(generate_latest(telemetry.registry).decode())

    referenced = {name for expr in _exprs() for name in referenced_series(expr)}
    assert len(referenced) > 30
    missing = sorted(referenced - served)
    assert not missing, f"the dashboard queries series no opscale process serves: {missing}"
