"""Request and response bodies of the chat API (Pydantic). Unknown fields are rejected (422)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from rlhf.feedback import store
from rlhf.feedback.tables import ChatTurn
from rlhf.feedback.web.schemas import Strict

Policy = Literal["user", "shared", "base"]


class ConversationIn(Strict):
    title: str = Field("", max_length=200, description="Shown in the conversation list.")


class ConversationOut(BaseModel):
    id: int
    title: str
    created_at: datetime
    turns: int


class CandidateOut(BaseModel):
    id: int
    label: str
    """'A' or 'B' (or 'A' alone for a single reply)."""
    text: str


class UsageOut(BaseModel):
    tokens: list[int]
    """Generated tokens per candidate."""
    queue_ms: float
    generate_ms: float
    adapter_load_ms: float


class TurnIn(Strict):
    message: str = Field(min_length=1, max_length=4000, description="The user's message.")
    compare: bool = Field(True, description="Two candidate replies side by side (A/B) instead of one.")
    max_new_tokens: Optional[int] = Field(None, ge=1, description="At most the server's cap (GET /api/chat/me).")
    request_id: Optional[str] = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Client-chosen key; a retried request with the same key returns the stored turn.",
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message must not be blank")
        return v.strip()


class TurnOut(BaseModel):
    id: int
    conversation_id: int
    position: int
    message: str
    candidates: list[CandidateOut]
    policy: Policy
    """Who answered: your own adapter ('user'), the shared aligned policy, or the base model."""
    adapter_version: Optional[int]
    feedback: Optional[dict[str, str]]
    """Your choice so far: {"choice": "A"|"B"|"tie"} or {"thumbs": "up"|"down"}; null before you chose."""
    usage: Optional[UsageOut] = None
    """Only on the response that generated the turn."""


class ConversationDetail(ConversationOut):
    turn_list: list[TurnOut]


class FeedbackIn(Strict):
    """Exactly one of `choice` (for two replies) or `thumbs` (for one)."""

    choice: Optional[Literal["A", "B", "tie"]] = None
    thumbs: Optional[Literal["up", "down"]] = None
    seconds: Optional[float] = Field(None, ge=0, le=86400, description="Time spent deciding.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "FeedbackIn":
        if (self.choice is None) == (self.thumbs is None):
            raise ValueError("send exactly one of choice (A, B or tie) or thumbs (up or down)")
        return self


class FeedbackOut(BaseModel):
    judgement_id: int
    turn_id: int
    feedback: dict[str, str]
    duplicate: bool
    """True when this repeated a choice already stored (nothing new written)."""


class MeOut(BaseModel):
    id: int
    name: str
    policy: Policy
    """Who answers you now."""
    adapter_version: Optional[int]
    max_new_tokens: int
    """The server's cap on one reply."""
    choices: int
    """Your stored choices (A/B and thumbs)."""


class DeletedOut(BaseModel):
    user: str
    removed: dict[str, int]
    """Rows removed from the store, by kind."""
    files: list[str]
    """Files removed from the personal folder (reward part, adapters and their training state)."""


def turn_out(turn: ChatTurn, usage: UsageOut | None = None) -> TurnOut:
    comps = turn.item.completions
    return TurnOut(
        id=turn.id, conversation_id=turn.conversation_id, position=turn.position, message=turn.item.prompt,
        candidates=[CandidateOut(id=c.id, label="AB"[i], text=c.text) for i, c in enumerate(comps)],
        policy=turn.policy, adapter_version=turn.adapter_version, feedback=store.turn_feedback(turn), usage=usage,
    )
