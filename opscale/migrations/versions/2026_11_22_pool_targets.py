"""pool_targets: the desired replica count of each operator pool, for level-triggered re-placement

Revision ID: 5c2e8b41d9a0
Revises: 3d1f0c9a5b27
Create Date: 2026-11-22 15:15:00+00:00

Placement must re-place a lost node's replicas, and replace replicas that failed for good, without
waiting for the decision service to call again; so it keeps the last desired count per pool, and what
one replica of the pool needs, in its own table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5c2e8b41d9a0"
down_revision: str | Sequence[str] | None = "3d1f0c9a5b27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "pool_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=63), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("demand", _json(), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_targets")),
        sa.UniqueConstraint(
            "deployment", "stage", "operator", name=op.f("uq_pool_targets_deployment_stage_operator")
        ),
    )


def downgrade() -> None:
    op.drop_table("pool_targets")
