"""deploy/Dockerfile and .dockerignore, checked as text (no Docker engine here or in CI)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_on_python_311_slim() -> None:
    instructions = _instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    image = args.get("PYTHON_IMAGE", "")
    froms = [rest.replace("${PYTHON_IMAGE}", image) for w, rest in instructions if w == "FROM"]
    assert len(froms) >= 2, "builder and runtime stages"
    assert all(f.startswith("python:3.11-slim") for f in froms), froms
    assert any(w == "COPY" and rest.startswith("--from=builder") for w, rest in instructions)


def test_runs_as_a_numeric_non_root_user_with_opscale_as_entrypoint() -> None:
    instructions = _instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    entrypoint = [rest for word, rest in instructions if word == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["opscale"]


def test_installs_the_package_without_dev_extras() -> None:
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "pip install . (no [test] extras)"
    assert "[test]" not in runs and "-e " not in runs


def test_copies_what_pip_needs_and_dockerignore_keeps_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            copied.update(rest.split()[:-1])
    assert {"pyproject.toml", pyproject["project"]["readme"], *packages} <= copied
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in copied:
        assert (ROOT / path).exists(), f"COPY {path}: no such path"
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), f".dockerignore drops {path}"
    assert ".venv" in ignored and ".git" in ignored
