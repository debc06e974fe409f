"""Chat feedback -> each user's preference pairs, thumbs, prompts and held-out choices.

An A/B choice gives one pair (a tie gives none: there is no preference to learn); thumbs on a single reply
give a pointwise label. Held-out choices are picked by a seeded hash of the judgement id, so a choice held
out once stays held out in every later run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

from rlhf.feedback.pairs import pairs_from_tiers
from rlhf.feedback.store import ChatFeedback
from rlhf.types import PreferencePair, Prompt


@dataclass(frozen=True)
class Thumb:
    """A single reply rated up (+1) or down (-1)."""

    prompt: str
    text: str
    label: int
    judgement_id: int


@dataclass
class UserFeedback:
    labeler_id: int
    name: str
    pairs: list[PreferencePair] = field(default_factory=list)
    thumbs: list[Thumb] = field(default_factory=list)
    heldout_pairs: list[PreferencePair] = field(default_factory=list)
    heldout_thumbs: list[Thumb] = field(default_factory=list)
    ties: int = 0
    last_judgement_id: int = 0
    """The newest of the user's judgements (held-out ones included): an adapter trained up to it is current."""
    prompts: list[Prompt] = field(default_factory=list)
    """The user's own messages of the training choices (de-duplicated; without earlier turns), for PPO."""

    @property
    def key(self) -> str:
        return user_key(self.labeler_id)


def user_key(labeler_id: int) -> str:
    """The name of a user's files and adapter: ids, not names, so a re-used name never inherits anything."""
    return f"u{labeler_id}"


def reward_prompt(context: Sequence[tuple[str, str]], message: str) -> str:
    """The text a reward model reads before a reply: the conversation so far, then the user's message."""
    if not context:
        return message
    return "\n".join(f"{role}: {content}" for role, content in context) + f"\nuser: {message}"


def is_heldout(judgement_id: int, fraction: float, seed: int) -> bool:
    if fraction <= 0:
        return False
    h = hashlib.sha256(f"{seed}:{judgement_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64 < fraction


def collect_feedback(rows: Sequence[ChatFeedback], eval_fraction: float = 0.0, seed: int = 0) -> dict[int, UserFeedback]:
    """Group chat judgements by user into pairs / thumbs, holding out `eval_fraction` of the choices."""
    users: dict[int, UserFeedback] = {}
    seen_prompts: dict[int, set[str]] = {}
    for r in rows:
        u = users.setdefault(r.labeler_id, UserFeedback(r.labeler_id, r.labeler))
        u.last_judgement_id = max(u.last_judgement_id, r.judgement_id)
        held = is_heldout(r.judgement_id, eval_fraction, seed)
        prompt = reward_prompt(r.context, r.prompt)
        meta = {"user": r.labeler_id, "judgement_id": r.judgement_id, "turn_id": r.turn_id}
        if r.kind == "rank":
            pairs, tied = pairs_from_tiers(r.ranking)
            u.ties += tied
            out = u.heldout_pairs if held else u.pairs
            out += [PreferencePair(prompt, r.completions[p.chosen], r.completions[p.rejected], 1.0, meta) for p in pairs]
        else:
            out_t = u.heldout_thumbs if held else u.thumbs
            out_t += [Thumb(prompt, text, int(v), r.judgement_id) for text, v in zip(r.completions, r.thumbs)]
        if not held and r.prompt not in seen_prompts.setdefault(r.labeler_id, set()):
            seen_prompts[r.labeler_id].add(r.prompt)
            u.prompts.append(Prompt(f"turn-{r.turn_id}", r.prompt))
    return users
