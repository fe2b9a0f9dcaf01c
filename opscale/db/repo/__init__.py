"""Async repositories over an ``AsyncSession``.

The app layer owns the transaction: a repository reads and writes inside the session it is given and
never commits or rolls back. Mutations that people cause (deployments, node registration and status)
write an audit row in the same transaction, so the change and its record commit or vanish together.
Everything returned is a frozen record from :mod:`opscale.db.records`, never an ORM row.

Typical use::

    async with sessions() as session, session.begin():
        record = await DeploymentRepo(session, clock=clock).update(name, spec, expected_version=3, actor=who)
"""

from opscale.db.repo.audit import AuditRepo
from opscale.db.repo.commands import CommandRepo
from opscale.db.repo.decisions import DecisionRepo
from opscale.db.repo.deployments import DeploymentRepo
from opscale.db.repo.nodes import NodeRepo
from opscale.db.repo.pool_targets import PoolTargetRepo
from opscale.db.repo.profiles import ProfileRepo
from opscale.db.repo.replicas import HISTORY_LIMIT, ReplicaRepo

__all__ = [
    "HISTORY_LIMIT",
    "AuditRepo",
    "CommandRepo",
    "DecisionRepo",
    "DeploymentRepo",
    "NodeRepo",
    "PoolTargetRepo",
    "ProfileRepo",
    "ReplicaRepo",
]
