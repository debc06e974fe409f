"""Constitutional AI, supervised stage: answer red-team prompts, self-critique, revise.

For each prompt: 1. answer -> 2. critique the answer against a principle -> 3. revise it. The
revisions become SFT data (`sft.jsonl`), and (revision over original) preference pairs (`pairs.jsonl`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from rlhf.config import save_config
from rlhf.constitutional.constitution import Principle, load_constitution
from rlhf.data import JsonlAppender, read_prompts, resolve_prompts, write_jsonl
from rlhf.generation import SamplingConfig, decode_responses, encode_texts, eos_ids, format_messages, sample
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm
from rlhf.types import Prompt


@dataclass(frozen=True)
class ReviseConfig:
    model: str = DEFAULT_POLICY
    """Model that answers, critiques and revises (alias, folder or hub id)."""
    prompts: str = "redteam"
    """Red-team prompt file or built-in set."""
    split: str | None = "train"
    """Keep only prompts of this split (null = all)."""
    limit: int | None = None
    """Use only the first N prompts."""
    constitution: str | None = None
    """YAML file of principles (null = the built-in polite / harmless / helpful constitution)."""
    out_dir: str = "runs/constitutional"
    """Output: revisions.jsonl (everything), sft.jsonl (prompt, response=revision), pairs.jsonl."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.95))
    """Sampling for the answer, the critique and the revision."""
    batch_size: int = 16
    """Prompts per batch."""
    max_context_tokens: int = 768
    """Conversation tokens kept (from the end) when critiquing and revising."""
    seed: int = 0
    """Sampling seed; also picks each prompt's principle."""


@dataclass
class Revision:
    id: str
    prompt: str
    principle: str
    response: str
    critique: str
    revision: str


def pick_principle(prompt_id: str, principles: Sequence[Principle], seed: int) -> Principle:
    """A principle per prompt, fixed by (seed, id) so resumed runs pick the same one."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[:4], "little")
    return principles[random.Random(h).randrange(len(principles))]


def _turn(model, tok, conversations: list[list[dict]], cfg: ReviseConfig, gen: torch.Generator) -> list[str]:
    ids, mask = encode_texts(tok, [format_messages(tok, c) for c in conversations], cfg.max_context_tokens)
    out = sample(model, ids, mask, cfg.sampling, eos_ids(tok, model), tok.pad_token_id, gen)
    return decode_responses(tok, out)


def critique_and_revise(model, tok, prompts: Sequence[Prompt], principles: Sequence[Principle], cfg: ReviseConfig) -> list[Revision]:
    """Answer -> critique -> revision for one batch of prompts."""
    gen = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(("|".join(p.id for p in prompts) + str(cfg.seed)).encode()).digest()[:7], "little"))
    chosen = [pick_principle(p.id, principles, cfg.seed) for p in prompts]
    convs = [[{"role": "user", "content": p.prompt}] for p in prompts]
    answers = _turn(model, tok, convs, cfg, gen)
    convs = [c + [{"role": "assistant", "content": a}, {"role": "user", "content": pr.critique}] for c, a, pr in zip(convs, answers, chosen)]
    critiques = _turn(model, tok, convs, cfg, gen)
    convs = [c + [{"role": "assistant", "content": k}, {"role": "user", "content": pr.revision}] for c, k, pr in zip(convs, critiques, chosen)]
    revisions = _turn(model, tok, convs, cfg, gen)
    return [
        Revision(p.id, p.prompt, pr.name, a, k, r)
        for p, pr, a, k, r in zip(prompts, chosen, answers, critiques, revisions)
    ]


def run_revise(cfg: ReviseConfig, model_and_tokenizer: tuple | None = None, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Critique-and-revise every prompt not yet in revisions.jsonl; then write sft.jsonl and pairs.jsonl."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "revise.yaml")
    principles = load_constitution(cfg.constitution)
    prompts = read_prompts(resolve_prompts(cfg.prompts), split=cfg.split)[: cfg.limit]
    with JsonlAppender(out / "revisions.jsonl") as log:
        done = {r["id"] for r in log.records}
        todo = [p for p in prompts if p.id not in done]
        if todo:
            model, tok = model_and_tokenizer or load_causal_lm(cfg.model)
            for i in range(0, len(todo), cfg.batch_size):
                for rev in critique_and_revise(model, tok, todo[i : i + cfg.batch_size], principles, cfg):
                    log.append(rev.__dict__)
                if on_progress:
                    on_progress(len(prompts) - len(todo) + min(i + cfg.batch_size, len(todo)), len(prompts))
        records = log.records
    usable = [r for r in records if r["revision"].strip() and r["revision"].strip() != r["response"].strip()]
    write_jsonl(out / "sft.jsonl", [{"prompt": r["prompt"], "response": r["revision"]} for r in usable])
    write_jsonl(out / "pairs.jsonl", [
        {"prompt": r["prompt"], "chosen": r["revision"], "rejected": r["response"], "metadata": {"principle": r["principle"]}}
        for r in usable
    ])
    return out
