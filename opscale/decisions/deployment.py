"""A deployment as stored: one spec version, whether it is frozen, and when it was made and changed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from opscale.db.records import DeploymentRecord
from opscale.spec import DeploymentSpec


@dataclass(frozen=True, slots=True)
class Deployment:
    spec: DeploymentSpec
    version: int
    frozen: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, record: DeploymentRecord) -> Deployment:
        return cls(
            spec=DeploymentSpec.model_validate(record.spec),
            version=record.version,
            frozen=record.frozen,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )
