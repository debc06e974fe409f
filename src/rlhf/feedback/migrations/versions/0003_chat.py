"""Chat and personalisation: chat projects, conversations, turns (items of the chat projects), users' adapters.

Revision ID: 0003
Revises: 0001 (relinked onto 0002 at merge)
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "chat_projects",
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('ab', 'single')", name="ck_chat_projects_kind"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_chat_projects_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("kind", name="pk_chat_projects"),
        sa.UniqueConstraint("project_id", name="uq_chat_projects_project_id"),
    )
    op.create_table(
        "chat_conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name="fk_chat_conversations_labeler_id_labelers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chat_conversations"),
    )
    op.create_index("ix_chat_conversations_labeler", "chat_conversations", ["labeler_id"])
    op.create_table(
        "chat_turns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("policy", sa.String(10), nullable=False),
        sa.Column("adapter_version", sa.Integer(), nullable=True),
        sa.Column("reply_completion_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["chat_conversations.id"],
            name="fk_chat_turns_conversation_id_chat_conversations", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name="fk_chat_turns_labeler_id_labelers", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_chat_turns_item_id_items", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["assignment_id"], ["assignments.id"], name="fk_chat_turns_assignment_id_assignments", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["reply_completion_id"], ["completions.id"],
            name="fk_chat_turns_reply_completion_id_completions", ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_chat_turns"),
        sa.UniqueConstraint("conversation_id", "position", name="uq_chat_turns_conversation_position"),
        sa.UniqueConstraint("labeler_id", "request_id", name="uq_chat_turns_labeler_request"),
        sa.UniqueConstraint("item_id", name="uq_chat_turns_item_id"),
        sa.UniqueConstraint("assignment_id", name="uq_chat_turns_assignment_id"),
    )
    op.create_index("ix_chat_turns_labeler", "chat_turns", ["labeler_id"])
    op.create_table(
        "personal_adapters",
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("shared", sa.String(64), nullable=False),
        sa.Column("last_judgement_id", sa.Integer(), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name="fk_personal_adapters_labeler_id_labelers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("labeler_id", name="pk_personal_adapters"),
    )


def downgrade() -> None:
    for table in ("personal_adapters", "chat_turns", "chat_conversations", "chat_projects"):
        op.drop_table(table)
