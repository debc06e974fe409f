"""AI labelers: labelers.kind ('human' | 'ai') and .model; judgements.confidence and .details.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("labelers") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="human"))
        batch.add_column(sa.Column("model", sa.String(500), nullable=True))
        batch.create_check_constraint("ck_labelers_kind", "kind IN ('human', 'ai')")
    with op.batch_alter_table("judgements") as batch:
        batch.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgements") as batch:
        batch.drop_column("details")
        batch.drop_column("confidence")
    with op.batch_alter_table("labelers") as batch:
        batch.drop_constraint("ck_labelers_kind", type_="check")
        batch.drop_column("model")
        batch.drop_column("kind")
