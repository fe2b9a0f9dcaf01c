"""Bad input to the CLI is one line on stderr and exit code 2, never a traceback (issue 13): the YAML
reproducers (``name: !!int x``, 5,000 nested ``[``), aliases, bad flags, and hypothesis-generated YAML
text through ``apply -f``'s reader and the settings file."""

from __future__ import annotations

import io
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from opscale.cli.apply import read_specs
from opscale.cli.main import app, run
from opscale.config import load_settings
from opscale.errors import ConfigError, InvalidArgument
from opscale.yamlio import YamlError, load_all
from tests.fuzz_budget import examples, report

OUTCOMES: Counter[str] = Counter()

REPRODUCERS = {
    "bad-tag": "name: !!int x\n",
    "deep": "[" * 5000 + "\n",
    "alias-bomb": "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
    "python-tag": "name: !!python/object/apply:os.system ['id']\n",
    "not-a-mapping": "- just\n- a list\n",
    "syntax": "name: chat\n  model: : x\n",
}


@pytest.mark.parametrize("text", REPRODUCERS.values(), ids=REPRODUCERS.keys())
def test_apply_refuses_bad_yaml_in_one_line_with_exit_2(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(SystemExit) as info:
        run_cli("apply", "-f", str(spec), "--decision", "127.0.0.1:1")
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(spec) in err


def run_cli(*args: str) -> None:
    argv, sys.argv = sys.argv, ["opscale", *args]
    try:
        run(app)
    finally:
        sys.argv = argv


@pytest.mark.parametrize(
    "args",
    [
        ("delete",),
        ("get", "nodez"),
        ("get", "nodes", "--timeout", "x"),
        ("what-if", "chat", "--rps", "nan?"),
        ("certs", "init"),
        ("evaluate", "--model", "llama3-8b", "--no-plots"),  # was: 0 runs, empty reports written
        ("evaluate", "--quick", "--trace", "azure-code", "--no-plots"),
        ("evaluate", "--workers", "-1", "--no-plots"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(*args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--rps", "0"), "--rps"),
        (("--input-tokens", "0"), "--input-tokens"),
        (("--output-tokens", "10000000000"), "--output-tokens"),
        (("--length-mix", "medium"), "medium"),
        (("--layout", "pipeline"), "--layout"),
        (("--seconds", "100", "--confirm-seconds", "60"), "--confirm-seconds"),
    ],
)
def test_oracle_refuses_bad_input_before_simulating(
    args: tuple[str, ...], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli("oracle", "--model", "qwen2-7b", *args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert named in err


@pytest.mark.parametrize(
    "args",
    [
        ("oracle", "--model", "qwen2-7b", "--json", "{missing}/x.json"),
        ("oracle", "--model", "qwen2-7b", "--json", "{tmp}"),
        ("validate", "--quick", "--json", "{missing}/x.json"),
        ("simulate", "--duration-s", "10", "--json", "{missing}/x.json"),
        ("evaluate", "--quick", "--no-plots", "--out", "{file}"),
        ("evaluate", "--quick", "--no-plots", "--out", "{file}/sub"),
        ("demo", "--out", "{file}"),
    ],
    ids=[
        "oracle-no-folder",
        "oracle-a-folder",
        "validate",
        "simulate",
        "evaluate-a-file",
        "evaluate-under-a-file",
        "demo",
    ],
)
def test_an_output_that_cannot_be_written_fails_before_any_work(
    args: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output path is tried first: before, oracle simulated for 35 s and then ended in
    ``internal error: FileNotFoundError``; evaluate and demo would have run for minutes."""
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    paths = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "file": str(a_file)}
    argv = [a.format(**paths) for a in args]
    with pytest.raises(SystemExit) as info:
        run_cli(*argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert argv[-2] in err and argv[-1] in err
    assert a_file.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_json_output_is_tried_without_leaving_a_file(tmp_path: Path) -> None:
    from opscale.cli.common import writable_file

    out = tmp_path / "out.json"
    writable_file(out, "--json")
    assert not out.exists()
    out.write_text("old")
    writable_file(out, "--json")
    assert out.read_text() == "old"


def test_a_trace_and_model_the_matrix_has_no_scenario_for_is_refused() -> None:
    from opscale.sim.evaluate import scenario_subset
    from opscale.sim.experiment import Scenario

    matrix = [Scenario("azure-conv", "qwen2-7b"), Scenario("azure-code", "llama3-70b")]
    assert scenario_subset(matrix, ["azure-code"], None) == matrix[1:]
    with pytest.raises(InvalidArgument, match="no scenario"):
        scenario_subset(matrix, ["azure-code"], ["qwen2-7b"])


def test_a_bad_settings_file_is_a_config_error(tmp_path: Path) -> None:
    for text in REPRODUCERS.values():
        path = tmp_path / "settings.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError):
            load_settings(path)
    result = CliRunner().invoke(app, ["up", "-c", str(path)])
    assert result.exit_code == 2


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "name: chat\n",
                "model: {preset: llama3-8b}\n",
                "slo: {ttft_ms: 1000, tbt_ms: 100}\n",
                "[",
                "]",
                "{",
                "}",
                ": ",
                "- ",
                "!!int ",
                "!!float ",
                "!!binary ",
                "&a ",
                "*a ",
                "---\n",
                "? ",
                "'",
                '"',
                "\t",
                "\x00",
                "x" * 50,
                "1e999",
                "-1",
                "labels: {a: b}\n",
                "params: {max_batch_size: 1e400}\n",
                "interval_s: .nan\n",
                "limits: [{max_replicas: 99999999999999999999}]\n",
            ]
        ),
        max_size=30,
    ).map("".join),
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(yaml_text)
def test_any_text_is_a_spec_or_one_invalid_argument(text: str) -> None:
    stdin, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        specs = read_specs(Path("-"))
    except InvalidArgument as exc:
        OUTCOMES["apply -f: refused"] += 1
        assert "\n" not in exc.message
        return
    finally:
        sys.stdin = stdin
    OUTCOMES["apply -f: parsed"] += 1
    assert specs  # parsed: every document was a valid spec


@settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(yaml_text)
def test_the_yaml_reader_raises_only_yaml_error(text: str) -> None:
    try:
        load_all(text)
    except YamlError as exc:
        OUTCOMES["yaml: refused"] += 1
        assert "\n" not in str(exc)
    else:
        OUTCOMES["yaml: parsed"] += 1


def test_report_outcomes() -> None:
    """Runs after the two fuzz tests above (file order): their counts go to make fuzz's report."""
    report("cli-yaml", OUTCOMES)
