"""The feedback store's tables (SQLAlchemy 2 ORM). Schema changes go through `migrations/versions`.

A project holds items (a prompt and its N completions). Each item is assigned to k labelers; each
assignment gets at most one judgement: a ranking (tiers of completion positions, best first), thumbs
(+1/-1 per completion position) or a flag with a reason. AI labelers (constitutional AI) are labelers
of kind 'ai' whose judgements also carry a confidence and the evidence behind it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

MODES = ("rank", "thumbs")
KINDS = ("rank", "thumbs", "flag")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("mode IN ('rank', 'thumbs')", name="mode"),
        CheckConstraint("labelers_per_item >= 1", name="labelers_per_item"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    criterion: Mapped[str] = mapped_column(String(500))
    instructions: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(10), default="rank")
    labelers_per_item: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    items: Mapped[list[Item]] = relationship(back_populates="project", cascade="all, delete-orphan")


class Item(Base):
    """A prompt with its completions (one line of `rlhf generate` output)."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id", name="uq_items_project_external"),
        Index("ix_items_project_assigned", "project_id", "n_assigned"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    n_assigned: Mapped[int] = mapped_column(Integer, default=0)
    """Assignments handed out; claimed with a conditional UPDATE so it never passes k."""

    project: Mapped[Project] = relationship(back_populates="items")
    completions: Mapped[list[Completion]] = relationship(
        back_populates="item", order_by="Completion.position", cascade="all, delete-orphan"
    )


class Completion(Base):
    __tablename__ = "completions"
    __table_args__ = (UniqueConstraint("item_id", "position", name="uq_completions_item_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    """Index in the generation's `completions` list."""
    text: Mapped[str] = mapped_column(Text)

    item: Mapped[Item] = relationship(back_populates="completions")


class Labeler(Base):
    __tablename__ = "labelers"
    __table_args__ = (CheckConstraint("kind IN ('human', 'ai')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the login token; the token itself is shown once and never stored."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(10), default="human", server_default="human")
    """'human', or 'ai' for a model labeling through the same store (kept out of the human consensus)."""
    model: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    """The model behind an AI labeler (alias, folder or hub id)."""


class Exclusion(Base):
    """A labeler left out of a project's export (and of its consensus)."""

    __tablename__ = "exclusions"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("item_id", "labeler_id", name="uq_assignments_item_labeler"),
        CheckConstraint("status IN ('pending', 'done')", name="status"),
        Index("ix_assignments_labeler_project_status", "labeler_id", "project_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)

    item: Mapped[Item] = relationship()
    labeler: Mapped[Labeler] = relationship()
    judgement: Mapped[Optional[Judgement]] = relationship(back_populates="assignment", uselist=False)


class Judgement(Base):
    __tablename__ = "judgements"
    __table_args__ = (CheckConstraint("kind IN ('rank', 'thumbs', 'flag')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    ranking: Mapped[Optional[list[list[int]]]] = mapped_column(JSON, nullable=True)
    """Tiers of completion positions, best first; a tier with several positions is a tie."""
    thumbs: Mapped[Optional[list[int]]] = mapped_column(JSON, nullable=True)
    """+1 (up) or -1 (down) per completion position."""
    flag_reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    seconds: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    """Time the labeler spent on the item, as reported by the client."""
    confidence: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    """AI labelers: mean probability given to the preferred side of each pair (0.5 = coin flip, 1 = certain)."""
    details: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    """AI labelers: the evidence (principle, P(A) per pair in both orders) shown on the audit page."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    assignment: Mapped[Assignment] = relationship(back_populates="judgement")


# --------------------------------------------------------------------------- chat and personalisation (migration 0003)
# A chat turn is an ordinary item (the user's message, its candidate replies as completions) in one of two
# hidden chat projects, assigned to its author only; a choice is an ordinary judgement of that assignment.
# These tables add what labeling has no place for: conversations, turn order, and each user's adapter.

CHAT_KINDS = ("ab", "single")


class ChatProject(Base):
    """The project that holds chat turns of one kind: 'ab' (two replies, rank mode) or 'single' (thumbs mode)."""

    __tablename__ = "chat_projects"
    __table_args__ = (CheckConstraint("kind IN ('ab', 'single')", name="kind"),)

    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), unique=True)


class ChatConversation(Base):
    __tablename__ = "chat_conversations"
    __table_args__ = (Index("ix_chat_conversations_labeler", "labeler_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    """The user who owns it; nobody else can read it or add to it."""
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChatTurn(Base):
    """One user message and the reply candidates it got (an item + its assignment to the author)."""

    __tablename__ = "chat_turns"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position", name="uq_chat_turns_conversation_position"),
        UniqueConstraint("labeler_id", "request_id", name="uq_chat_turns_labeler_request"),
        Index("ix_chat_turns_labeler", "labeler_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("chat_conversations.id", ondelete="CASCADE"))
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    """0, 1, ... within the conversation."""
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), unique=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    request_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    """Client-chosen key: a retried request returns the stored turn instead of generating again."""
    policy: Mapped[str] = mapped_column(String(10))
    """Who answered: 'user' (the user's own adapter), 'shared' (the shared aligned policy) or 'base'."""
    adapter_version: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    reply_completion_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("completions.id", ondelete="SET NULL"), nullable=True
    )
    """The candidate the conversation continues from (the chosen one once there is a choice)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    item: Mapped[Item] = relationship()
    assignment: Mapped[Assignment] = relationship()


class PersonalAdapter(Base):
    """The published LoRA adapter of a user (written by `rlhf personalize`, read by the chat server)."""

    __tablename__ = "personal_adapters"

    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    """Folder of the peft adapter (adapter_config.json + adapter_model.safetensors)."""
    shared: Mapped[str] = mapped_column(String(64))
    """Fingerprint of the shared adapter it was trained on top of ('none' = the base)."""
    last_judgement_id: Mapped[int] = mapped_column(Integer)
    """The newest of the user's judgements it was trained with: newer ones make the user due for an update."""
    pairs: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
