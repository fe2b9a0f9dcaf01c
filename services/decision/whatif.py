"""What-if use case: the plans policies would make for a hypothetical steady load (nothing recorded).

The planning itself is ``opscale.policy.whatif.what_if`` (pure, shared with the CLI and the simulator);
this module validates the load, resolves the spec (a deployment's current one, or one given inline),
and runs it in a worker thread (model-based plans take milliseconds each).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.repo import DeploymentRepo
from opscale.decisions.deployment import Deployment
from opscale.errors import InvalidArgument
from opscale.policy.whatif import WhatIfResult, what_if
from opscale.spec import DeploymentSpec, PolicyKind


@dataclass(frozen=True, slots=True)
class HypotheticalLoad:
    requests_per_s: float
    input_tokens: float
    output_tokens: float


def check_load(load: HypotheticalLoad) -> HypotheticalLoad:
    for name, value in (
        ("load.requests_per_s", load.requests_per_s),
        ("load.input_tokens", load.input_tokens),
        ("load.output_tokens", load.output_tokens),
    ):
        if not (math.isfinite(value) and value > 0):
            raise InvalidArgument(f"{name} must be a finite number > 0, got {value}", field=name)
    return load


class WhatIfApp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

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
        return await asyncio.to_thread(
            what_if, spec, load.requests_per_s, load.input_tokens, load.output_tokens, chosen
        )
