"""docs/spec.md is generated from the spec model; it must not drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_matches_the_model() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_spec_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_top_level_field_is_documented() -> None:
    from opscale.spec import DeploymentSpec

    text = (ROOT / "docs" / "spec.md").read_text()
    for name in DeploymentSpec.model_fields:
        assert f"| `{name}` |" in text, name
