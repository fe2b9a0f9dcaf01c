"""What-if use case: the plans policies would make for a hypothetical steady load (nothing recorded).

The planning itself is ``opscale.policy.whatif.what_if`` (pure, shared with the CLI and the simulator);
this module validates the load (finite and within ``LOAD_RANGES``), resolves the spec (a deployment's
current one, or one given inline), and runs it in a planning process under a CPU-time budget
(``opscale.services.decision.planning``): a plan takes milliseconds, but its cost is the caller's to choose,
and the decision leader's loop in this process must never wait on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.repo import DeploymentRepo
from opscale.decisions.deployment import Deployment
from opscale.errors import InvalidArgument
from opscale.policy.whatif import WhatIfResult
from opscale.services.decision.planning import PlanningPool
from opscale.spec import DeploymentSpec, PolicyKind


@dataclass(frozen=True, slots=True)
class HypotheticalLoad:
    requests_per_s: float
    input_tokens: float
    output_tokens: float


#: (exclusive low, inclusive high) of each load figure. A million requests a second is beyond any one
#: deployment; a million tokens is beyond any context window the model presets have.
LOAD_RANGES = {
    "load.requests_per_s": 1e6,
    "load.input_tokens": float(1 << 20),
    "load.output_tokens": float(1 << 20),
}


def check_load(load: HypotheticalLoad) -> HypotheticalLoad:
    for name, value in (
        ("load.requests_per_s", load.requests_per_s),
        ("load.input_tokens", load.input_tokens),
        ("load.output_tokens", load.output_tokens),
    ):
        high = LOAD_RANGES[name]
        if not (math.isfinite(value) and 0 < value <= high):
            raise InvalidArgument(f"{name} must be a number in (0, {high:g}], got {value}", field=name)
    return load


class WhatIfApp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, pool: PlanningPool) -> None:
        self._sessions = sessions
        self._clock = clock
        self._pool = pool

    async def spec_of(self, deployment: str) -> DeploymentSpec:
        async with self._sessions() as session:
            record = await DeploymentRepo(session, clock=self._clock).get(deployment)
        return Deployment.from_record(record).spec

    async def plans(
        self, spec: DeploymentSpec, load: HypotheticalLoad, policies: Sequence[PolicyKind]
    ) -> list[WhatIfResult]:
        """One result per policy asked (de-duplicated, in order); none asked: the spec's own policy."""
        check_load(load)
        chosen = list(dict.fromkeys(policies)) or [spec.policy]
        return await self._pool.plan(spec, load.requests_per_s, load.input_tokens, load.output_tokens, chosen)
