"""Scrape targets in the settings (file, environment) and as `opscale serve ingest --scrape` flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.cli.main import app
from opscale.config import ScrapeEngine, ScrapeRole, load_settings
from opscale.errors import ConfigError


def test_targets_from_a_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "opscale.yaml"
    cfg.write_text(
        "scrape_interval_s: 2\n"
        "scrape_targets:\n"
        "  - {url: 'http://10.0.0.5:8000/metrics', deployment: llama, role: decode, engine: vllm}\n"
        "  - {url: 'https://p.example:30000/metrics', deployment: llama, role: prefill, interval_s: 0.5}\n"
    )
    s = load_settings(cfg)
    assert s.scrape_interval_s == 2.0
    first, second = s.scrape_targets
    assert (first.role, first.engine, first.interval_s, first.timeout_s) == (
        ScrapeRole.DECODE,
        ScrapeEngine.VLLM,
        None,
        2.0,
    )
    assert (second.role, second.engine, second.interval_s) == (ScrapeRole.PREFILL, ScrapeEngine.AUTO, 0.5)
    target = {"url": "http://e:8000/metrics", "deployment": "mix", "role": "serving"}
    monkeypatch.setenv("OPSCALE_SCRAPE_TARGETS", json.dumps([target]))
    assert [t.deployment for t in load_settings().scrape_targets] == ["mix"]


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ({"url": "ftp://e/metrics", "deployment": "d", "role": "decode"}, "scrape_targets.0.url"),
        (
            {"url": "http://e/metrics", "deployment": "Not A Name", "role": "decode"},
            "scrape_targets.0.deployment",
        ),
        ({"url": "http://e/metrics", "deployment": "d", "role": "router"}, "scrape_targets.0.role"),
        (
            {"url": "http://e/metrics", "deployment": "d", "role": "decode", "timeout_s": 0},
            "scrape_targets.0.timeout_s",
        ),
        (
            {"url": "http://e/metrics", "deployment": "d", "role": "decode", "engine": "trt"},
            "scrape_targets.0.engine",
        ),
    ],
)
def test_a_bad_target_names_its_field(target: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(scrape_targets=[target])
    assert named.upper() in info.value.message.upper()


def test_scrape_flags_must_pair_up() -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "serve",
            "ingest",
            "--scrape",
            "http://a:1/metrics",
            "--scrape",
            "http://b:1/metrics",
            "--deployment",
            "d",
            "--role",
            "decode",
        ],
    )
    assert result.exit_code == 2
    assert (
        "--scrape, --deployment and --role pair up in order; got 2 --scrape, 1 --deployment and 1 --role"
        in (result.output)
    )
    result = runner.invoke(
        app, ["serve", "ingest", "--scrape", "http://a:1/metrics", "--deployment", "d", "--role", "x"]
    )
    assert result.exit_code == 2 and "--scrape #1 (http://a:1/metrics): role:" in result.output
    result = runner.invoke(
        app, ["serve", "decision", "--scrape", "http://a:1/metrics", "--deployment", "d", "--role", "decode"]
    )
    assert result.exit_code == 2 and "`opscale serve ingest` only" in result.output
