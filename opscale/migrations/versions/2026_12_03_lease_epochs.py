"""lease_epochs: a fencing token per named lease, so a deposed leader's late writes are refused;
decisions.lease_epoch, so placement refuses a deposed leader's late hand-off

Revision ID: 8a4d2f6c1e37
Revises: 5c2e8b41d9a0
Create Date: 2026-12-03 23:55:00+00:00

A leader that hung (SIGSTOP, a long pause, a partition) loses its lease to another replica; when it
wakes it may still be half-way through a tick. Every write a lease holder makes checks, in the same
transaction, that the lease's epoch is still the one it took (opscale.lease).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8a4d2f6c1e37"
down_revision: str | Sequence[str] | None = "5c2e8b41d9a0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lease_epochs",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lease_epochs")),
    )
    op.add_column("decisions", sa.Column("lease_epoch", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("lease_epoch")
    op.drop_table("lease_epochs")
