"""Initial feedback schema: projects, items, completions, labelers, exclusions, assignments, judgements.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("criterion", sa.String(500), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("labelers_per_item", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.CheckConstraint("mode IN ('rank', 'thumbs')", name="ck_projects_mode"),
        sa.CheckConstraint("labelers_per_item >= 1", name="ck_projects_labelers_per_item"),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("name", name="uq_projects_name"),
    )
    op.create_table(
        "labelers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_labelers"),
        sa.UniqueConstraint("name", name="uq_labelers_name"),
        sa.UniqueConstraint("token_hash", name="uq_labelers_token_hash"),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("n_assigned", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_items_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.UniqueConstraint("project_id", "external_id", name="uq_items_project_external"),
    )
    op.create_index("ix_items_project_assigned", "items", ["project_id", "n_assigned"])
    op.create_table(
        "completions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_completions_item_id_items", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_completions"),
        sa.UniqueConstraint("item_id", "position", name="uq_completions_item_position"),
    )
    op.create_table(
        "exclusions",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_exclusions_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name="fk_exclusions_labeler_id_labelers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", "labeler_id", name="pk_exclusions"),
    )
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("completed_at", TZ, nullable=True),
        sa.CheckConstraint("status IN ('pending', 'done')", name="ck_assignments_status"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_assignments_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_assignments_item_id_items", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name="fk_assignments_labeler_id_labelers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
        sa.UniqueConstraint("item_id", "labeler_id", name="uq_assignments_item_labeler"),
    )
    op.create_index("ix_assignments_labeler_project_status", "assignments", ["labeler_id", "project_id", "status"])
    op.create_table(
        "judgements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("ranking", sa.JSON(), nullable=True),
        sa.Column("thumbs", sa.JSON(), nullable=True),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.CheckConstraint("kind IN ('rank', 'thumbs', 'flag')", name="ck_judgements_kind"),
        sa.ForeignKeyConstraint(
            ["assignment_id"], ["assignments.id"], name="fk_judgements_assignment_id_assignments", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_judgements"),
        sa.UniqueConstraint("assignment_id", name="uq_judgements_assignment_id"),
    )


def downgrade() -> None:
    for table in ("judgements", "assignments", "exclusions", "completions", "items", "labelers", "projects"):
        op.drop_table(table)
