"""Observability pieces on their own: the standard OTEL_* environment, the registry's standard
collectors, SLO attainment from a window histogram, and the node agent's /metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from opscale.agent.agent import Agent, AgentConfig
from opscale.agent.gpus import FakeGpus
from opscale.agent.metrics import AgentCollector
from opscale.counters import HistogramBin
from opscale.errors import ConfigError
from opscale.signals.load import share_at_most
from opscale.signals.summary import Distribution
from opscale.telemetry import PERIODIC, build_telemetry, otlp_exporter

OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


def test_the_endpoint_variable_alone_turns_export_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert otlp_exporter(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert otlp_exporter(None) is not None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert otlp_exporter(None) is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert otlp_exporter(None) is None
    assert otlp_exporter("http://127.0.0.1:4317") is None  # disabled means disabled, setting or not


def test_an_unsupported_protocol_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf'.*gRPC"):
        otlp_exporter(None)


def test_service_names_env_override_and_one_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = InMemorySpanExporter()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "plane")
    single = build_telemetry("opscale-decision", span_exporter=spans)
    assert single.service("decision") is single  # one service per process: the process's own name
    shared = build_telemetry("opscale", span_exporter=spans, per_service=True)
    for name in ("decision", "ingest"):
        with shared.service(name).tracer("t").start_as_current_span("work"):
            pass
    with single.tracer("t").start_as_current_span("work"):
        pass
    names = [s.resource.attributes["service.name"] for s in spans.get_finished_spans()]
    assert names == ["plane-decision", "plane-ingest", "plane"]


def test_an_idle_periodic_root_is_dropped_and_a_busy_one_kept() -> None:
    spans = InMemorySpanExporter()
    tracer = build_telemetry("opscale-test", span_exporter=spans).tracer("t")
    with tracer.start_as_current_span("idle", attributes={PERIODIC: True}):
        pass
    with (
        tracer.start_as_current_span("busy", attributes={PERIODIC: True}),
        tracer.start_as_current_span("child"),
    ):
        pass
    with tracer.start_as_current_span("plain"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["child", "busy", "plain"]


def test_the_registry_has_build_info_and_process_collectors() -> None:
    registry = build_telemetry("opscale-test").registry
    text = generate_latest(registry).decode()
    assert 'opscale_build_info{python_version="' in text and 'service="opscale-test"' in text
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert family in text, family


def _dist(bins: list[tuple[float, float, int]]) -> Distribution:
    return Distribution(
        count=sum(c for *_, c in bins),
        mean=None,
        p50=None,
        p90=None,
        p99=None,
        bins=tuple(HistogramBin(lo, hi, c) for lo, hi, c in bins),
    )


def test_attainment_counts_bins_within_the_target_and_interpolates_the_straddling_one() -> None:
    d = _dist([(0, 100, 6), (100, 200, 2), (200, float("inf"), 2)])
    assert share_at_most(d, 100) == pytest.approx(0.6)
    assert share_at_most(d, 150) == pytest.approx(0.7)
    assert share_at_most(d, 10_000) == pytest.approx(0.8)  # the overflow bin never counts as within
    assert share_at_most(_dist([]), 100) is None


def test_agent_metrics_describe_the_node(tmp_path: Path) -> None:
    agent = Agent(
        AgentConfig(node="n1", placement_address="127.0.0.1:1", state_dir=tmp_path, templates={}),
        FakeGpus("2xH100", "n1"),
    )
    agent.commands["start", "accepted"] += 2
    telemetry = build_telemetry("opscale-agent")
    telemetry.registry.register(AgentCollector(agent))
    port = telemetry.serve_metrics("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        telemetry.shutdown()
    for line in (
        'opscale_agent_connected{node="n1"} 0.0',
        'opscale_agent_gpus{node="n1",state="free"} 2.0',
        'opscale_agent_gpus{node="n1",state="busy"} 0.0',
        'opscale_agent_registrations_total{node="n1"} 0.0',
        'opscale_agent_commands_total{kind="start",node="n1",status="accepted"} 2.0',
    ):
        assert line in text, line
    assert "process_resident_memory_bytes" in text and "opscale_build_info" in text
    CollectorRegistry().register(AgentCollector(agent))  # registers with no name clash of its own
