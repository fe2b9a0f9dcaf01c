"""Scrape targets in the settings (file, environment) and as `opscale serve ingest --scrape` flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opscale.cli.main import app
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


def serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["serve", *args])
    return result.exit_code, result.output


def test_scrape_flags_must_pair_up() -> None:
    code, out = serve("ingest", "--scrape", "http://a:1/metrics", "--scrape", "http://b:1/metrics",
                      "--deployment", "d", "--role", "decode")  # fmt: skip
    assert code == 2
    assert "pair up in order; got 2 --scrape, 1 --deployment, 1 --role and 0 --model-name" in out
    code, out = serve("ingest", "--scrape", "http://a:1/metrics", "--deployment", "d", "--role", "x")
    assert code == 2 and "--scrape #1 (http://a:1/metrics): role:" in out
    code, out = serve("decision", "--scrape", "http://a:1/metrics", "--deployment", "d", "--role", "decode")
    assert code == 2 and "`opscale serve ingest` only" in out


def test_two_models_on_one_url_need_a_model_name_each() -> None:
    url = "http://a:1/metrics"
    code, out = serve("ingest", "--scrape", url, "--deployment", "d", "--role", "decode",
                      "--scrape", url, "--deployment", "e", "--role", "decode")  # fmt: skip
    assert (
        code == 2 and f"{url} is mapped to both 'd' and 'e'; one model's series go to one deployment" in out
    )
    one = ["--scrape", url, "--deployment", "d", "--role", "decode", "--model-name", "m"]
    code, out = serve("ingest", *one, *one[:3], "e", *one[4:])
    assert code == 2 and f"model 'm' on {url} is mapped to both 'd' and 'e'" in out
    target = {"url": url, "deployment": "d", "role": "decode"}
    with pytest.raises(ConfigError, match="each needs its own model_name when several share the URL"):
        load_settings(scrape_targets=[{**target, "model_name": "m"}, {**target, "deployment": "e"}])
    with pytest.raises(ConfigError, match="disagree on engine, interval_s or timeout_s"):
        load_settings(
            scrape_targets=[
                {**target, "model_name": "m"},
                {**target, "model_name": "n", "deployment": "e", "timeout_s": 5},
            ]
        )


def test_prometheus_sources_and_their_errors() -> None:
    s = load_settings(
        prometheus_url="http://prom:9090",
        prometheus_sources=[{"deployment": "d", "role": "decode", "engine": "vllm", "selector": '{job="v"}'}],
    )
    assert s.prometheus_sources[0].selector == '{job="v"}'
    with pytest.raises(ConfigError, match="prometheus_url is not"):
        load_settings(prometheus_sources=[{"deployment": "d", "role": "decode", "engine": "vllm"}])
    with pytest.raises(ConfigError, match="must be vllm or sglang"):
        load_settings(
            prometheus_url="http://p:1",
            prometheus_sources=[{"deployment": "d", "role": "decode", "engine": "auto"}],
        )
    with pytest.raises(ConfigError, match="label matchers in braces"):
        load_settings(
            prometheus_url="http://p:1",
            prometheus_sources=[{"deployment": "d", "role": "decode", "engine": "vllm", "selector": "job=v"}],
        )
    code, out = serve("ingest", "--prometheus-source", "d:decode:vllm:{}")
    assert code == 2 and "--prometheus-source needs --prometheus-url" in out
    code, out = serve("ingest", "--prometheus-url", "http://p:1", "--prometheus-source", "d:decode")
    assert code == 2 and "expected DEPLOYMENT:ROLE:ENGINE:SELECTOR" in out
    code, out = serve("ingest", "--prometheus-url", "ftp://p", "--prometheus-source", "d:decode:vllm:{}")
    assert code == 2 and "must be an http:// or https:// URL" in out


def test_max_gap_and_targets_file_flags(tmp_path: Path) -> None:
    code, out = serve("ingest", "--max-gap", "0")
    assert code == 2 and "--max-gap must be in (0, 3600]" in out
    code, out = serve("ingest", "--targets-file", str(tmp_path / "absent.json"))
    assert code == 2 and "no such file" in out
    assert load_settings(scrape_max_gap_s=150).scrape_max_gap_s == 150.0
