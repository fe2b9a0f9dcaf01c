"""Configuration: defaults, sources and their precedence, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from opscale.config import LogLevel, load_settings, redact_url
from opscale.errors import ConfigError


def test_defaults_are_the_embedded_default() -> None:
    cfg = load_settings()
    assert cfg.database_url.startswith("sqlite:///")
    assert cfg.counters_url == "memory://"
    assert cfg.is_embedded
    assert cfg.address_of("decision") == f"127.0.0.1:{cfg.decision_port}"


def test_env_overrides_file_and_flags_override_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "opscale.yaml"
    file.write_text("decision_port: 6000\nlog_level: debug\ningest_port: 6001\n")
    monkeypatch.setenv("OPSCALE_DECISION_PORT", "7000")
    cfg = load_settings(file, ingest_port=8000)
    assert cfg.decision_port == 7000  # env beats the file
    assert cfg.ingest_port == 8000  # a flag beats both
    assert cfg.log_level is LogLevel.DEBUG  # only in the file


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("OPSCALE_DECISION_PORT", "abc", "OPSCALE_DECISION_PORT='abc'"),
        ("OPSCALE_DECISION_PORT", "70000", "less than or equal to 65535"),
        ("OPSCALE_LOG_LEVEL", "loud", "allowed: debug, info, warning or error"),
        ("OPSCALE_DATABASE_URL", "mysql://x/y", "scheme must be sqlite or postgresql"),
        ("OPSCALE_COUNTERS_URL", "memcached://x", "must be memory:// or redis://"),
        ("OPSCALE_SHUTDOWN_GRACE_S", "0", "OPSCALE_SHUTDOWN_GRACE_S"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert env in str(info.value)
    assert expected in str(info.value)


def test_two_services_on_one_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="ingest_port and decision_port are both 7000"):
        load_settings(ingest_port=7000, decision_port=7000)


def test_port_zero_may_repeat() -> None:
    cfg = load_settings(ingest_port=0, decision_port=0, placement_port=0, metrics_port=0)
    assert cfg.decision_port == 0


def test_unknown_key_in_file(tmp_path: Path) -> None:
    file = tmp_path / "opscale.yaml"
    file.write_text("decision_prot: 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'decision_prot'"):
        load_settings(file)


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(bad)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_gc_thresholds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().gc_thresholds == (50_000, 50, 100)
    monkeypatch.setenv("OPSCALE_GC_THRESHOLDS", "null")  # CPython's defaults
    assert load_settings().gc_thresholds is None
    monkeypatch.setenv("OPSCALE_GC_THRESHOLDS", "[20000, 10, 10]")
    assert load_settings().gc_thresholds == (20_000, 10, 10)
    monkeypatch.delenv("OPSCALE_GC_THRESHOLDS")
    with pytest.raises(ConfigError, match=r"OPSCALE_GC_THRESHOLDS.*each threshold must be in \[1, 1000000\]"):
        load_settings(gc_thresholds=(0, 10, 10))
