"""The client SDK's import closure: what a serving framework loads with ``import opscale.sdk``.

Run in a fresh interpreter (this one has the services loaded already), so the test sees exactly what the
SDK imports, and fails naming the module that brought a heavy dependency in.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: Top-level modules that only the server extra (or the plots extra) provides: none may load with the SDK.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "aiosqlite",
    "redis",
    "numpy",
    "matplotlib",
    "pydantic",
    "pydantic_settings",
    "yaml",
    "typer",
    "rich",
    "prometheus_client",
    "pynvml",
    "cryptography",
)
# Not listed: grpc_health and grpc_reflection (server extra). grpc's own __init__ imports them when they
# are installed, as it does grpc_tools; where they are not (the SDK alone), nothing asks for them.

_PROBE = """
import json, sys
import opscale.sdk
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return list(json.loads(out.stdout))


def test_the_sdk_imports_no_server_or_plotting_library() -> None:
    loaded = _modules_after(_PROBE)
    heavy = sorted({m.partition(".")[0] for m in loaded} & set(HEAVY))
    assert not heavy, f"import opscale.sdk loads {heavy}: find the import with python -X importtime"
    # opentelemetry-api is a dependency of the SDK; the OpenTelemetry SDK and exporters are not.
    assert not [m for m in loaded if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]


def test_the_sdk_imports_no_service_telemetry_or_settings_module() -> None:
    loaded = set(_modules_after(_PROBE))
    for module in (
        "opscale.telemetry",
        "opscale.config",
        "opscale.policy.types",
        "opscale.services",
        "opscale.db.repo",
    ):
        assert module not in loaded, f"import opscale.sdk loads {module}"
