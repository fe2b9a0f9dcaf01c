"""The SDK installed alone, as a serving framework would: ``pip install opscale`` (no extras) into a fresh
virtualenv, then samples pushed from that virtualenv to a running ingest service.

The wheel is built from this checkout with the test environment's setuptools (``--no-build-isolation``,
so nothing is fetched to build it); the fresh virtualenv then gets the wheel and its three dependencies
through pip as configured on the machine (its cache and indexes). Never skipped: a failure to install is
a failure of the test, with pip's output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from opscale.api.ingest.v1 import ingest_pb2 as pb
from tests.component.conftest import StartIngest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: The packages the wheel installs. At the move of clients/services/migrations under opscale/, this
#: becomes {"opscale"}: no top-level module another project could collide with.
TOP_LEVEL = {"opscale"}
#: Distributions a plain install must not bring in.
SERVER_ONLY = ("sqlalchemy", "matplotlib", "numpy", "psycopg", "pydantic-settings", "nvidia-ml-py", "typer")
T = 1_700_000_000.0

_PUSH = """
import json, sys
from opscale.sdk import OpscaleClient

address, t = sys.argv[1], float(sys.argv[2])
with OpscaleClient(address, deployment="llama", instance="sdk-alone", clock=lambda: t, batch_size=40) as ops:
    for _ in range(100):
        ops.record_arrival(1000, 200)
        ops.record_ttft(150.0)
    flushed = ops.flush(timeout_s=20)
stats = ops.stats()
print(json.dumps({"flushed": flushed, "sent": stats.sent_samples,
                  "modules": sorted({m.partition(".")[0] for m in sys.modules})}))
"""


def _run(
    *argv: str | Path, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert out.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    )
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the wheel, the build's output). Built from a copy, so no build/ or egg-info lands in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in TOP_LEVEL:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    out = _run(
        sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", dist, src
    )
    (wheel,) = dist.glob("opscale-*.whl")
    return wheel, out.stdout + out.stderr


@pytest.fixture(scope="module")
def sdk_venv(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("sdk-venv")
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", built[0])
    return venv


def test_building_prints_no_deprecation_warning(built: tuple[Path, str]) -> None:
    _, output = built
    assert "running bdist_wheel" in output, "the verbose build log is not what this test reads"
    lines = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert not lines, "\n".join(lines)


def test_the_wheel_installs_only_packages_of_its_own(built: tuple[Path, str]) -> None:
    with zipfile.ZipFile(built[0]) as wheel:
        tops = {
            name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")
        }
    assert tops == TOP_LEVEL


def test_a_plain_install_has_no_server_or_plotting_dependency(sdk_venv: Path) -> None:
    listed = json.loads(_run(sdk_venv / "bin" / "python", "-m", "pip", "list", "--format", "json").stdout)
    names = {re.sub(r"[-_.]+", "-", d["name"]).lower() for d in listed}
    assert {"grpcio", "protobuf", "opentelemetry-api", "opscale"} <= names
    assert not names & set(SERVER_ONLY), sorted(names & set(SERVER_ONLY))


def test_the_command_says_which_extra_a_plain_install_lacks(sdk_venv: Path) -> None:
    out = subprocess.run(
        [sdk_venv / "bin" / "opscale", "version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "pip install 'opscale[server]'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
async def test_the_sdk_alone_pushes_samples_to_ingest(sdk_venv: Path, start_ingest: StartIngest) -> None:
    stack = await start_ingest()
    await stack.create_deployment("llama")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the venv installed
    proc = await asyncio.create_subprocess_exec(
        str(sdk_venv / "bin" / "python"),
        "-c",
        _PUSH,
        stack.address,
        str(T),
        cwd=sdk_venv,  # not the checkout: `import clients` must find the installed package
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert (result["flushed"], result["sent"]) == (True, 200)
    assert not {"sqlalchemy", "numpy", "matplotlib", "pydantic"} & set(result["modules"])

    stack.clock.set(T + 1)
    reply = await stack.stub.GetWindowSummary(
        pb.GetWindowSummaryRequest(deployment="llama", window_s=5), timeout=10
    )
    assert (reply.summary.arrivals, reply.summary.ttft_samples) == (100, 100)
