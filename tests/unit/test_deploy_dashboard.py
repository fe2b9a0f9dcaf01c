"""deploy/grafana/opscale-dashboard.json: well-formed for Grafana, and never drifting from the code.

Every series a query names must be one the code exports: the metric families are read from the source
(``Counter("opscale_…"``, ``GaugeMetricFamily("opscale_agent_…"`` and friends) and expanded the way
prometheus_client exposes them (a counter as ``_total``, a histogram as ``_bucket``/``_sum``/``_count``),
plus the standard families every registry carries (``process_*``, ``python_*``), so a renamed metric,
or ``rate()`` over a counter without ``_total``, fails here instead of showing an empty panel in
production. tests/component/test_dashboard_metrics.py checks the same against a live scrape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "opscale-dashboard.json"
SOURCES = ("opscale",)
DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum|CounterMetricFamily|GaugeMetricFamily)"
    r"\(\s*[\"']((?:opscale|rpc)_[a-z0-9_]+)[\"']"
)
#: Names a dashboard query may use: ours, the OpenTelemetry RPC histogram, the standard collectors.
REFERENCE = re.compile(r"\b(?:opscale|rpc|process|python)_[a-z0-9_]+")
#: Label matchers and grouping clauses, whose label names (rpc_method, …) are not series.
LABEL_PARTS = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def referenced_series(expr: str) -> set[str]:
    return set(REFERENCE.findall(LABEL_PARTS.sub("", expr)))


#: The series each kind of metric family exposes (prometheus_client's exposition).
SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "Enum": ("",),
    "CounterMetricFamily": ("_total",),
    "GaugeMetricFamily": ("",),
}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__all"}


def _dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def _panels() -> list[dict[str, Any]]:
    out = []
    for panel in _dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


def standard_series() -> set[str]:
    """What every opscale registry carries besides its own metrics (process, platform, gc collectors)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from opscale.telemetry import build_telemetry

    text = generate_latest(build_telemetry("opscale-test").registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def exported_series() -> set[str]:
    series: set[str] = standard_series()
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            if "api" in path.relative_to(ROOT).parts[:2]:
                continue  # generated stubs
            for kind, name in DEFINITION.findall(path.read_text()):
                base = name.removesuffix("_total") if kind == "Counter" else name
                series.update(base + suffix for suffix in SUFFIXES[kind])
    return series


def test_the_source_scan_finds_the_metrics_we_know_exist() -> None:
    # Guards the regex: if it silently matched nothing, every dashboard check below would be vacuous.
    series = exported_series()
    assert {
        "rpc_server_duration_milliseconds_count",
        "rpc_server_duration_milliseconds_bucket",
        "opscale_rpc_in_flight",
        "opscale_agent_commands_total",
        "opscale_deployment_slo_attainment_ratio",
        "process_cpu_seconds_total",
        "opscale_build_info",
    } <= series
    assert "opscale_agent_commands" not in series  # a counter is only exposed with _total


def test_every_metric_the_dashboard_queries_is_exported_by_the_code() -> None:
    series = exported_series()
    referenced = {name for expr in _exprs() for name in referenced_series(expr)}
    assert referenced, "the dashboard queries no opscale metric"
    missing = sorted(referenced - series)
    assert not missing, f"the dashboard queries series no code exports: {missing}"


def test_queries_are_balanced_and_use_only_defined_variables() -> None:
    variables = {v["name"] for v in _dashboard()["templating"]["list"]} | GRAFANA_BUILTINS
    for expr in _exprs():
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), f"unbalanced {opening}{closing}: {expr}"
        assert expr.count('"') % 2 == 0, f"unbalanced quotes: {expr}"
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in variables, f"${name} is not a dashboard variable: {expr}"
        # Counters are only meaningful as a rate or an increase.
        for counter in re.findall(r"\b(?:opscale|rpc|process)_[a-z0-9_]+_total\b", expr):
            assert re.search(rf"(rate|increase)\({counter}\b", expr), f"raw counter {counter}: {expr}"


def test_grafana_shape_schema_version_and_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    reference = f"${{{datasource['name']}}}"
    for panel in _panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == reference, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == reference for t in panel["targets"]), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel means to an SRE"


def test_panel_ids_are_unique_and_the_grid_does_not_overlap() -> None:
    panels = _panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_sre_questions_each_have_a_panel() -> None:
    exprs = " ".join(_exprs())
    needed = {
        "RPC rate": "rpc_server_duration_milliseconds_count",
        "RPC latency": "rpc_server_duration_milliseconds_bucket",
        "deployment load": "opscale_deployment_arrival_rate",
        "latency vs SLO": "opscale_deployment_ttft_slo_seconds",
        "SLO attainment": "opscale_deployment_slo_attainment_ratio",
        "decided vs placed vs ready": "opscale_pool_replicas_decided",
        "decision lag": "opscale_deployment_decision_lag_seconds",
        "agents": "opscale_agent_connected",
        "process resources": "process_resident_memory_bytes",
        "decisions and outcomes": "opscale_decisions_total",
        "decision tick time": "opscale_decision_tick_seconds_bucket",
        "ingest rejects": "opscale_ingest_batches_rejected_total",
        "signal staleness": "opscale_ingest_scrape_last_success_timestamp_seconds",
    }
    for question, metric in needed.items():
        assert metric in exprs, f"no panel answers {question!r} ({metric})"
