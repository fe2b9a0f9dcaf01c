"""Builders shared by the test suites: specs as data, as domain values and as protos, and waiting.

Each builder takes overrides for just what a test cares about; everything else is the smallest valid
value. A test that needs a shape these do not give builds it here, not in a copy of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.protobuf.struct_pb2 import Struct

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.spec import DeploymentSpec, parse_spec
from opscale.wire.specs import spec_to_pb


def spec_data(**overrides: Any) -> dict[str, Any]:
    """A minimal valid spec as YAML would give it: llama3-70b on H100, TTFT 2 s / TBT 100 ms at p99."""
    base: dict[str, Any] = {
        "name": "llama",
        "model": {"preset": "llama3-70b"},
        "slo": {"ttft_ms": 2000, "tbt_ms": 100},
    }
    base.update(overrides)
    return base


def spec(**overrides: Any) -> DeploymentSpec:
    return parse_spec(spec_data(**overrides))


def spec_pb(**overrides: Any) -> pb.DeploymentSpec:
    """``spec(**overrides)`` as the wire carries it."""
    return spec_to_pb(spec(**overrides))


def static_spec_pb(
    name: str, replicas: Mapping[str, int], *, interval_s: float = 1.0, **overrides: Any
) -> pb.DeploymentSpec:
    """A static-policy spec: ``replicas`` maps "stage/operator" to a fixed count (llama3-8b)."""
    pools = [{"pool": pool, "replicas": n} for pool, n in replicas.items()]
    data = {
        "model": {"preset": "llama3-8b"},
        "policy": "static",
        "params": {"pools": pools},
        "interval_s": interval_s,
    }
    return spec_pb(name=name, **(data | overrides))


def struct(data: Mapping[str, Any]) -> Struct:
    out = Struct()
    out.update(dict(data))
    return out


async def until(
    check: Callable[[], Awaitable[bool] | bool],
    timeout_s: float = 10.0,
    what: str = "condition",
    poll_s: float = 0.05,
) -> None:
    """Wait (bounded) until ``check()`` holds; fails naming ``what`` when it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for: {what}")
        await asyncio.sleep(poll_s)
