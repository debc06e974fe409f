"""Records that flow between stages. Batched tensors live in their stage (e.g. `rlhf.policy.experience`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    """One prompt with its N sampled completions: a line of `rlhf generate`'s output."""

    id: str
    prompt: str
    completions: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["completions"] = list(self.completions)
        return d


@dataclass(frozen=True)
class PreferencePair:
    """`chosen` is preferred over `rejected` for `prompt` (TRL / HF datasets column names)."""

    prompt: str
    chosen: str
    rejected: str
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.weight != 1.0:
            d["weight"] = self.weight
        if self.metadata:
            d["metadata"] = self.metadata
        return d
