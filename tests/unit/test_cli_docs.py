"""docs/cli.md is generated from the Typer app: it fails here when a command changed and the file was not
regenerated (python scripts/gen_cli_docs.py), and its examples are checked against the real parsers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

from opscale.cli.client import CliConfig
from opscale.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_cli_docs", module)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_matches_the_app() -> None:
    gen = _script()
    assert (ROOT / "docs" / "cli.md").read_text() == gen.generate(), (
        "docs/cli.md is out of date: run python scripts/gen_cli_docs.py"
    )


def test_every_sre_command_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for command in [
        "get nodes", "get gpus", "get deployments", "get replicas", "get decisions", "describe deployment",
        "describe node", "apply", "delete", "freeze", "unfreeze", "cordon", "uncordon", "drain", "explain",
        "what-if", "top", "config use-context", "config get-contexts", "up", "serve", "agent", "worker",
        "demo", "load", "db upgrade", "db current", "certs init", "simulate", "oracle", "version",
    ]:  # fmt: skip
        assert f"### `opscale {command}`" in text, command


def test_examples_are_valid(tmp_path: Path) -> None:
    gen = _script()
    spec = parse_spec(yaml.safe_load(gen.SPEC_EXAMPLE))
    assert (spec.name, spec.model.preset, spec.slo.ttft_ms) == ("chat", "llama3-70b", 2000)
    config = tmp_path / "config.yaml"
    config.write_text(gen.CONFIG_EXAMPLE)
    loaded = CliConfig.load(config)
    assert loaded.current == "prod" and loaded.context("local").name == "local"


def test_the_lazy_listing_says_what_each_command_says() -> None:
    """`opscale --help` lists the commands from opscale.cli.main.LAZY without importing them; each
    summary is the first paragraph of the real command's own help."""
    from opscale.cli.main import LAZY, every_command

    for name, command in every_command(list(LAZY)).items():
        first = " ".join((command.help or "").strip().split("\n\n")[0].split())
        assert LAZY[name].summary == first, name
        assert command.name == name


def test_an_internal_error_exits_with_the_internal_code() -> None:
    from opscale.cli.exit_codes import ExitCode
    from opscale.cli.main import INTERNAL_EXIT

    assert INTERNAL_EXIT == ExitCode.INTERNAL


def test_every_setting_in_the_readme_table_is_a_flag_of_the_commands_that_use_it() -> None:
    import re

    from opscale.cli.main import every_command

    text = (ROOT / "README.md").read_text()
    table = text[text.index("| setting | default | meaning |") :].split("\n\n", 1)[0]
    names = {n for row in table.splitlines()[2:] for n in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert {"ingest_port", "metrics_port", "tls_ca_file", "whatif_workers"} <= names  # the parse works
    commands = every_command(["up", "serve", "agent"])
    flags = {c: {o for p in cmd.params for o in p.opts} for c, cmd in commands.items()}
    aliases = {"listen_host": "--host", "agent_metrics_port": "--metrics-port"}
    no_flag = {"gc_thresholds"}  # a tuple: environment or YAML only (the README says so)
    where = {"agent_env_allowlist": ("agent",), "agent_metrics_port": ("agent",)}
    for name in names - no_flag:
        flag = aliases.get(name, "--" + name.replace("_", "-"))
        for command in where.get(name, ("up",)):
            assert flag in flags[command], f"opscale {command} has no {flag}"
    assert "--ingest-port" not in flags["serve"] and "--port" in flags["serve"]
