"""Deployment spec use cases: versioned CRUD with compare-and-swap, freeze, audit (via the repository).

Transport-free: takes validated domain values, returns domain values, raises typed errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.repo import DeploymentRepo
from opscale.decisions.deployment import Deployment
from opscale.errors import InvalidArgument
from opscale.spec import DeploymentSpec
from opscale.wire.pages import take_page


@dataclass(frozen=True, slots=True)
class Page:
    deployments: list[Deployment]
    next_page_token: str


class DeploymentsApp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def _repo(self, session: AsyncSession) -> DeploymentRepo:
        return DeploymentRepo(session, clock=self._clock)

    async def create(self, spec: DeploymentSpec, actor: str) -> Deployment:
        async with self._sessions() as session, session.begin():
            record = await self._repo(session).create(spec.name, spec.model_dump(mode="json"), actor)
        return Deployment.from_record(record)

    async def update(self, spec: DeploymentSpec, expected_version: int, actor: str) -> Deployment:
        if expected_version <= 0:
            raise InvalidArgument(
                "expected_version is required: the version you read (see GetDeployment)",
                field="expected_version",
            )
        async with self._sessions() as session, session.begin():
            record = await self._repo(session).update(
                spec.name, spec.model_dump(mode="json"), expected_version, actor
            )
        return Deployment.from_record(record)

    async def get(self, name: str, version: int | None = None) -> Deployment:
        async with self._sessions() as session:
            return Deployment.from_record(await self._repo(session).get(name, version))

    async def list(self, size: int, token: str) -> Page:
        async with self._sessions() as session:
            records = await self._repo(session).list()
        chosen, next_token = take_page(records, lambda r: r.name, size, token)
        return Page([Deployment.from_record(r) for r in chosen], next_token)

    async def delete(self, name: str, expected_version: int | None, actor: str) -> int:
        async with self._sessions() as session, session.begin():
            repo = self._repo(session)
            version = (await repo.get(name)).version
            await repo.delete(name, expected_version, actor)
        return expected_version or version

    async def set_frozen(self, name: str, frozen: bool, actor: str) -> Deployment:
        async with self._sessions() as session, session.begin():
            record = await self._repo(session).set_frozen(name, frozen, actor)
        return Deployment.from_record(record)
