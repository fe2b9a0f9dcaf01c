"""decisions: at most one decision per deployment per tick

Revision ID: 3d1f0c9a5b27
Revises: 7eccf28f1bc9
Create Date: 2026-11-22 15:00:00+00:00

The decision loop stamps each decision with its tick slot (``floor(now / interval) × interval``). Two
decision replicas that both believe they lead a deployment for a moment (the old leader's lease
connection died but it has not noticed yet) would compute the same slot; making the existing
``(deployment, tick_at)`` index unique turns that double decision into an integrity error the loser
skips, instead of two rows. A database that already holds duplicate rows cannot take this migration;
delete the younger of each pair first.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "3d1f0c9a5b27"
down_revision: str | Sequence[str] | None = "7eccf28f1bc9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_decisions_deployment_tick_at"), table_name="decisions")
    op.create_index(
        op.f("ix_decisions_deployment_tick_at"), "decisions", ["deployment", "tick_at"], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_decisions_deployment_tick_at"), table_name="decisions")
    op.create_index(op.f("ix_decisions_deployment_tick_at"), "decisions", ["deployment", "tick_at"])
