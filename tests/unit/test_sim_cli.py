"""`opscale simulate` and `opscale evaluate` end to end on tiny inputs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opscale.cli.main import app
from opscale.errors import ConfigError
from opscale.sim.plots import plots_available, pyplot

FIX = Path(__file__).parents[1] / "fixtures" / "traces"


def test_simulate_prints_and_writes_metrics(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(FIX / "mooncake_small.jsonl"),
            "--model",
            "mixtral-8x7b",
            "--policy",
            "model",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["requests"] == 3 and data["rejected"] == 0 and data["slo_attainment"] == 1.0


def test_evaluate_writes_json_and_markdown(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--quick",
            "--out",
            str(tmp_path),
            "--workers",
            "1",
            "--policy",
            "static",
            "--model",
            "mixtral-8x7b",
            "--no-plots",
            "--no-lower-bound",  # the oracle: minutes on two cores (test_sim_feed_validate)
        ],
    )
    assert res.exit_code == 0, res.output
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["metrics"]["policy"] for r in runs] == ["static"]
    assert "| static |" in (tmp_path / "results.md").read_text()


def test_evaluate_sweeps_the_headroom_of_planners(tmp_path: Path) -> None:
    args = ["evaluate", "--quick", "--out", str(tmp_path), "--workers", "1", "--policy", "model"]
    args += ["--model", "qwen2-7b", "--headroom", "0.5", "--no-lower-bound", "--no-plots"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["metrics"]["headroom"] for r in runs] == [0.0, 0.5]
    assert "| model | headroom 0.5 |" in (tmp_path / "results.md").read_text()


def test_evaluate_bad_arguments_are_named() -> None:
    for args, named in (
        (["--headroom", "5"], "--headroom"),
        (["--policy", "nope"], "--policy 'nope'"),
        (["--sweep-policy", "pd"], "--sweep-policy 'pd'"),
    ):
        res = CliRunner().invoke(app, ["evaluate", "--quick", *args])
        assert res.exit_code == 2, res.output
        assert named in res.output


def test_unknown_trace_is_a_clear_error() -> None:
    res = CliRunner().invoke(app, ["simulate", "--trace", "nope"])
    assert res.exit_code != 0
    assert "nope" in res.output


def test_a_start_past_the_trace_is_exit_2_naming_start_s() -> None:
    res = CliRunner().invoke(
        app, ["simulate", "--trace", "azure-conv", "--start-s", "99999", "--duration-s", "30"]
    )
    assert res.exit_code == 2, res.output
    assert "start_s/duration_s: no request of 'azure-conv' arrives 99999 s" in res.output


def test_evaluate_without_matplotlib_asks_for_the_extra_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib is the plots extra (not in the service image): plots requested without it are exit 2
    naming the extra and --no-plots, before the matrix runs (nothing written)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if absent
    res = CliRunner().invoke(app, ["evaluate", "--quick", "--out", str(tmp_path / "ev"), "--workers", "1"])
    assert res.exit_code == 2, res.output
    assert "pip install 'opscale[plots]'" in res.output and "--no-plots" in res.output
    assert not (tmp_path / "ev").exists()


def test_pyplot_without_matplotlib_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plots_available() is False
    with pytest.raises(ConfigError, match=re.escape("pip install 'opscale[plots]'")):
        pyplot()


def test_a_trace_that_is_not_text_is_exit_2_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00")
    res = CliRunner().invoke(app, ["simulate", "--trace", str(bad), "--policy", "model", "--no-lower-bound"])
    assert res.exit_code == 2, res.output
    assert "bad.csv' is not UTF-8 text" in res.output
