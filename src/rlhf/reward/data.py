"""Tokenisation and batching for reward models.

A text is `prompt` + `response` encoded as a pair (BERT: `[CLS] p [SEP] r [SEP]` with segment ids;
decoders: the concatenation, then EOS). Truncation always keeps the response: the prompt loses its
oldest tokens first, and only a response that alone exceeds the budget is cut (at its end).
Batches are padded to their own longest row and drawn from length-sorted groups (or whole prompts), so little
compute goes to padding; each distinct response is one row, and pairs index their chosen and rejected rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
from tokenizers import Tokenizer


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]
    type_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EncodedPair:
    chosen: Encoded
    rejected: Encoded
    weight: float = 1.0
    margin: float = 0.0

    @property
    def length(self) -> int:
        return max(len(self.chosen.ids), len(self.rejected.ids))


@dataclass(frozen=True)
class TokenBatch:
    input_ids: torch.Tensor  # (N, T) long
    attention_mask: torch.Tensor  # (N, T) long, 1 = real token
    token_type_ids: torch.Tensor | None = None  # (N, T) long


@dataclass(frozen=True)
class PairBatch:
    tokens: TokenBatch  # (N, T): each distinct sequence once
    chosen: torch.Tensor  # (B,) long: row of tokens holding pair i's chosen response
    rejected: torch.Tensor  # (B,) long: row of its rejected response
    weights: torch.Tensor  # (B,)
    margins: torch.Tensor  # (B,)

    @property
    def num_pairs(self) -> int:
        return int(self.weights.shape[0])

    def rewards(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) rewards of the rows -> (r_chosen (B,), r_rejected (B,))."""
        return r[self.chosen], r[self.rejected]


class TextEncoder:
    """Encodes (prompt, response) with the tokenizer's own special tokens, keeping the response."""

    def __init__(self, tokenizer, max_length: int, append_eos: bool = False):
        # A private copy of the Rust tokenizer: some checkpoints ship with padding/truncation switched on.
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()
        self.backend.no_truncation()
        self.max_length = max_length
        self.eos_id = tokenizer.eos_token_id if append_eos else None
        if append_eos and self.eos_id is None:
            raise ValueError("append_eos needs a tokenizer with an EOS token")
        self.with_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.budget = max_length - self.backend.num_special_tokens_to_add(True) - (self.eos_id is not None)
        if self.budget < 1:
            raise ValueError(f"max_length={max_length} leaves no room for text")

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoded]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        unique = list(dict.fromkeys(prompts))  # pairs share prompts; tokenise each once
        p_by_text = dict(zip(unique, self.backend.encode_batch(unique, add_special_tokens=False)))
        r_encs = self.backend.encode_batch(list(responses), add_special_tokens=False)
        out = []
        for prompt, r in zip(prompts, r_encs):
            p_ids = p_by_text[prompt].ids
            if len(r.ids) > self.budget:
                r.truncate(self.budget, direction="right")
            keep = self.budget - len(r.ids)
            p = self.backend.encode("", add_special_tokens=False) if keep == 0 else p_by_text[prompt]
            if 0 < keep < len(p_ids):
                p = self.backend.encode(prompt, add_special_tokens=False)  # fresh: truncate() mutates
                p.truncate(keep, direction="left")
            enc = self.backend.post_process(p, r, add_special_tokens=True)
            ids = list(enc.ids)
            type_ids = list(enc.type_ids) if self.with_type_ids else None
            if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                ids.append(self.eos_id)
                if type_ids is not None:
                    type_ids.append(type_ids[-1] if type_ids else 0)
            out.append(Encoded(tuple(ids), tuple(type_ids) if type_ids is not None else None))
        return out

    def encode_pairs(
        self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
        weights: Sequence[float], margins: Sequence[float],
    ) -> list[EncodedPair]:
        c = self.encode(prompts, chosen)
        r = self.encode(prompts, rejected)
        return [EncodedPair(a, b, float(w), float(m)) for a, b, w, m in zip(c, r, weights, margins)]


def pad_batch(seqs: Sequence[Encoded], pad_id: int, side: str = "right") -> TokenBatch:
    """Pad to the longest row; the mask, never `ids == pad_id`, marks real tokens (pad may equal EOS)."""
    width = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (N, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (N, T)
    types = torch.zeros((len(seqs), width), dtype=torch.long) if seqs[0].type_ids is not None else None
    for i, s in enumerate(seqs):
        n = len(s.ids)
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.tensor(s.ids, dtype=torch.long)
        mask[i, cols] = 1
        if types is not None:
            types[i, cols] = torch.tensor(s.type_ids, dtype=torch.long)
    return TokenBatch(ids, mask, types)


def collate_pairs(items: Sequence[EncodedPair], pad_id: int, side: str = "right") -> PairBatch:
    """Pairs -> one token batch in which a response shared by several pairs (one ranking of K responses gives up to
    K(K-1)/2 pairs) is a single row: the forward pass costs distinct responses, not pairs."""
    rows: dict[Encoded, int] = {}
    for p in items:
        rows.setdefault(p.chosen, len(rows))
        rows.setdefault(p.rejected, len(rows))
    return PairBatch(
        pad_batch(list(rows), pad_id, side),
        torch.tensor([rows[p.chosen] for p in items], dtype=torch.long),
        torch.tensor([rows[p.rejected] for p in items], dtype=torch.long),
        torch.tensor([p.weight for p in items], dtype=torch.float32),
        torch.tensor([p.margin for p in items], dtype=torch.float32),
    )


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int | None, group: int = 32
) -> list[list[int]]:
    """Index batches of similar length.

    With a seed: shuffle, sort inside windows of `group` batches, cut into batches, shuffle the
    batches (random order, little padding). With seed=None: fully sorted, longest first (eval).
    """
    idx = list(range(len(lengths)))
    if seed is None:
        idx.sort(key=lambda i: -lengths[i])
        return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(idx)
    window = batch_size * group
    batches = []
    for start in range(0, len(idx), window):
        chunk = sorted(idx[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def prompt_batches(prompts: Sequence[str], per_batch: int, seed: int) -> list[list[int]]:
    """Index batches holding every pair of `per_batch` prompts (shuffled with `seed`), so that the pairs of one
    ranking are seen together (InstructGPT, Ouyang et al. 2022, sec. 3.5) and share their forward rows."""
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    groups = list(by_prompt.values())
    random.Random(seed).shuffle(groups)
    return [sum(groups[i : i + per_batch], []) for i in range(0, len(groups), per_batch)]
