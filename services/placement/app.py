"""Placement use cases (transport-free): node inventory and cordon/uncordon."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.clock import Clock
from opscale.db.records import GpuRecord, NodeRecord
from opscale.db.repo import NodeRepo
from opscale.db.status import NodeStatus
from opscale.errors import Unimplemented

PLACEMENT_PENDING = (
    "{rpc}: turning desired counts into replicas on GPUs, draining nodes and the agent stream are the "
    "placement engine's capability, which this build does not include yet"
)


class PlacementApp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def _repo(self, session: AsyncSession) -> NodeRepo:
        return NodeRepo(session, clock=self._clock)

    async def list_nodes(self) -> list[NodeRecord]:
        async with self._sessions() as session:
            return await self._repo(session).list()

    async def get_node(self, name: str) -> NodeRecord:
        async with self._sessions() as session:
            return await self._repo(session).get(name)

    async def list_gpus(self, node: str, gpu_type: str) -> list[tuple[str, GpuRecord]]:
        nodes = [await self.get_node(node)] if node else await self.list_nodes()
        wanted = gpu_type.lower()
        return [(n.name, g) for n in nodes for g in n.gpus if not wanted or g.gpu_type.lower() == wanted]

    async def set_status(
        self, name: str, status: NodeStatus, expected_version: int | None, actor: str
    ) -> NodeRecord:
        """Cordon/uncordon; without ``expected_version`` the current version is used (no CAS check)."""
        async with self._sessions() as session, session.begin():
            repo = self._repo(session)
            current = await repo.get(name)
            if current.status is status:
                return current
            version = expected_version if expected_version is not None else current.version
            return await repo.set_status(name, status, version, actor=actor)

    def pending(self, rpc: str) -> Unimplemented:
        return Unimplemented(PLACEMENT_PENDING.format(rpc=rpc))
