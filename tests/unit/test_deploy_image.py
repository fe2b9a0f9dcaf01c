"""deploy/Dockerfile and .dockerignore, checked as text (no Docker engine here or in CI)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
LOCK = ROOT / "deploy" / "requirements.lock"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


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
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--", "opscale"]


def test_tini_from_debian_is_pid_1_of_the_runtime_stage() -> None:
    """The agent's operator processes re-parent to PID 1 when their parent exits: tini reaps them (and
    forwards signals). Kubernetes has no `docker run --init`, so it is in the image: Debian's package,
    installed in the runtime stage (the builder's packages stay behind)."""
    stages = _stages()
    runtime_runs = " ".join(rest for word, rest in stages[-1] if word == "RUN")
    assert re.search(r"apt-get install [^&]*--no-install-recommends tini", runtime_runs), runtime_runs
    assert "rm -rf /var/lib/apt/lists/*" in runtime_runs


def test_installs_the_locked_server_dependencies_by_hash_and_no_extras() -> None:
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "pip install --require-hashes -r requirements.lock" in runs
    assert "pip install --require-hashes -r build-requirements.lock" in runs
    # opscale itself: built without build isolation (the locked setuptools), installed without deps (the
    # lock has them all; `pip check` then proves the set is consistent).
    assert "pip wheel --no-deps --no-build-isolation" in runs
    assert re.search(r"pip install --no-deps /tmp/dist/opscale-\S*\.whl", runs)
    assert "pip check" in runs
    assert "[" not in runs and "-e " not in runs, "no extras, no editable install"


def _pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """{name: (version, hashes)} of a `uv pip compile --generate-hashes` file."""
    text = lock.read_text()
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\\")[0].strip()
        if not first or first.startswith("#"):
            continue
        name, _, version = first.partition("==")
        assert version, f"{lock.name}: not pinned: {first}"
        pins[canonicalize_name(name)] = (Version(version), block.count("--hash=sha256:"))
    return pins


def test_the_lock_pins_every_server_requirement_with_hashes_and_no_plotting_library() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(LOCK)
    assert pins and all(hashes >= 1 for _, hashes in pins.values())
    for line in [*pyproject["dependencies"], *pyproject["optional-dependencies"]["server"]]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {LOCK.name}: run make lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{LOCK.name}: {name} {pins[name][0]} !{req}"
        )
    for line in pyproject["optional-dependencies"]["plots"]:
        assert canonicalize_name(Requirement(line).name) not in pins, (
            "plotting libraries stay out of the image"
        )
    assert "make lock" in LOCK.read_text().splitlines()[1], "the header names the command that writes it"


def test_the_build_lock_pins_the_build_backend() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = _pins(ROOT / "deploy" / "build-requirements.lock")
    for line in requires:
        req = Requirement(line)
        assert req.specifier.contains(pins[canonicalize_name(req.name)][0]), f"{req} vs the build lock"


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
        dropped = [p for p in ignored if fnmatch.fnmatch(path, p)] and f"!{path}" not in ignored
        assert not dropped, f".dockerignore drops {path}"
    assert ".venv" in ignored and ".git" in ignored
    # deploy/ is left out except the two lock files the builder copies (a later `!` line re-includes).
    locks = {"deploy/requirements.lock", "deploy/build-requirements.lock"}
    assert locks <= copied
    assert all(
        f"!{lock}" in ignored and ignored.index(f"!{lock}") > ignored.index("deploy") for lock in locks
    )
