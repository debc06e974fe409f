"""Constitutional AI, supervised stage: answer red-team prompts, self-critique, revise.

For each prompt: 1. the policy answers -> 2. the critic (the policy itself, or `feedback_model`)
critiques the answer against a principle -> 3. the critic revises it -> 4. optionally the critic
judges revision vs answer (A/B, both orders) and only revisions judged better are kept. The kept
revisions become SFT data (`sft.jsonl`) and (revision over answer) pairs (`pairs.jsonl`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch

from rlhf.config import save_config
from rlhf.constitutional.constitution import Constitution, Principle, load_constitution, pick_principle  # noqa: F401
from rlhf.constitutional.prompts import critique_messages, format_conversation, revision_messages
from rlhf.data import JsonlAppender, read_prompts, resolve_prompts, write_jsonl
from rlhf.generation import SamplingConfig, decode_responses, encode_prompts, encode_texts, eos_ids
from rlhf.generator import generate
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm
from rlhf.types import Prompt


@dataclass(frozen=True)
class ReviseConfig:
    model: str = DEFAULT_POLICY
    """Policy that answers the prompts (alias, folder or hub id)."""
    feedback_model: str | None = None
    """Critic that critiques, revises and (with keep=better) judges (null = the policy itself)."""
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
    """Sampling for the policy's answer."""
    critique_temperature: float | None = None
    """Temperature for the critique and the revision (null = sampling.temperature; 0 = greedy)."""
    few_shot: int = 0
    """Worked examples from the constitution shown to the critic before each conversation (0 = none)."""
    keep: Literal["changed", "better"] = "changed"
    """Revisions kept for SFT: every non-empty one that changed the answer, or only those the critic judges better."""
    min_p_better: float = 0.5
    """With keep=better: keep a revision when P(revision better than answer) exceeds this."""
    batch_size: int = 16
    """Prompts per batch."""
    max_context_tokens: int = 768
    """Conversation tokens; each turn is cut separately (longest first) to fit, never the instruction."""
    max_prompt_tokens: int = 512
    """Prompt tokens for the policy's answer."""
    seed: int = 0
    """Sampling seed; also picks each prompt's principle."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""


@dataclass
class Revision:
    id: str
    prompt: str
    principle: str
    response: str
    critique: str
    revision: str
    p_revision_better: float | None = None
    """The critic's P(revision better than the answer), both orders averaged (keep=better only)."""


def _generator(prompts: Sequence[Prompt], seed: int) -> torch.Generator:
    h = hashlib.sha256(("|".join(p.id for p in prompts) + str(seed)).encode()).digest()[:7]
    return torch.Generator().manual_seed(int.from_bytes(h, "little"))


def _continue(model, tok, texts: list[str], sampling: SamplingConfig, max_tokens: int, gen: torch.Generator) -> list[str]:
    ids, mask = encode_texts(tok, texts, max_tokens)
    return decode_responses(tok, generate(model, ids, mask, sampling, eos_ids(tok, model), tok.pad_token_id, gen))


def critique_and_revise(
    policy: tuple, critic: tuple, prompts: Sequence[Prompt], constitution: Constitution, cfg: ReviseConfig
) -> list[Revision]:
    """Answer -> critique -> revision (-> judged) for one batch of prompts. `policy`, `critic`: (model, tokenizer)."""
    from rlhf.constitutional.ai_feedback import judge_pairs

    gen = _generator(prompts, cfg.seed)
    chosen = [pick_principle(p.id, constitution.principles, cfg.seed) for p in prompts]
    examples = constitution.examples[: cfg.few_shot]
    csamp = cfg.sampling if cfg.critique_temperature is None else dataclasses.replace(cfg.sampling, temperature=cfg.critique_temperature)
    (pm, ptok), (cm, ctok) = policy, critic
    # 1. answer
    ids, mask = encode_prompts(ptok, [p.prompt for p in prompts], cfg.max_prompt_tokens)
    answers = decode_responses(ptok, generate(pm, ids, mask, cfg.sampling, eos_ids(ptok, pm), ptok.pad_token_id, gen))
    # 2. critique
    convs = [critique_messages(p.prompt, a, pr, examples) for p, a, pr in zip(prompts, answers, chosen)]
    critiques = _continue(cm, ctok, [format_conversation(ctok, c, cfg.max_context_tokens) for c in convs], csamp, cfg.max_context_tokens, gen)
    # 3. revision
    convs = [revision_messages(p.prompt, a, k, pr, examples) for p, a, k, pr in zip(prompts, answers, critiques, chosen)]
    revisions = _continue(cm, ctok, [format_conversation(ctok, c, cfg.max_context_tokens) for c in convs], csamp, cfg.max_context_tokens, gen)
    out = [Revision(p.id, p.prompt, pr.name, a, k, r) for p, pr, a, k, r in zip(prompts, chosen, answers, critiques, revisions)]
    # 4. judged: is the revision better than the answer, by the same principle?
    if cfg.keep == "better":
        probs = judge_pairs(cm, ctok, [(p.prompt, r, a, pr) for p, r, a, pr in zip(prompts, revisions, answers, chosen)],
                            cfg.batch_size, cfg.max_context_tokens)
        for rev, p in zip(out, probs):
            rev.p_revision_better = round(p, 6)
    return out


def usable(records: Sequence[dict], cfg: ReviseConfig) -> list[dict]:
    """Revisions that go into SFT: non-empty, different from the answer, and (keep=better) judged better."""
    ok = [r for r in records if r["revision"].strip() and r["revision"].strip() != r["response"].strip()]
    if cfg.keep == "better":
        ok = [r for r in ok if (r.get("p_revision_better") or 0.0) > cfg.min_p_better]
    return ok


@dataclass
class ReviseResult:
    out_dir: Path
    records: list[dict]
    """Every prompt's answer, critique and revision (this run's prompts only)."""
    kept: list[dict]
    """The records whose revisions went into sft.jsonl and pairs.jsonl."""


def run_revise(
    cfg: ReviseConfig,
    model_and_tokenizer: tuple | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    feedback_model_and_tokenizer: tuple | None = None,
) -> ReviseResult:
    """Critique-and-revise every prompt not yet in revisions.jsonl; then write sft.jsonl and pairs.jsonl."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    constitution = load_constitution(cfg.constitution)  # a bad file fails before anything is written
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "revise.yaml")
    if cfg.few_shot > len(constitution.examples):
        raise ValueError(f"few_shot={cfg.few_shot} but the constitution has {len(constitution.examples)} examples")
    prompts = read_prompts(resolve_prompts(cfg.prompts), split=cfg.split)[: cfg.limit]
    with JsonlAppender(out / "revisions.jsonl") as log:
        done = {r["id"] for r in log.records}
        todo = [p for p in prompts if p.id not in done]
        if todo:
            policy = model_and_tokenizer or load_causal_lm(cfg.model)
            critic = feedback_model_and_tokenizer or (load_causal_lm(cfg.feedback_model) if cfg.feedback_model else policy)
            for i in range(0, len(todo), cfg.batch_size):
                for rev in critique_and_revise(policy, critic, todo[i : i + cfg.batch_size], constitution, cfg):
                    log.append(rev.__dict__)
                if on_progress:
                    on_progress(len(prompts) - len(todo) + min(i + cfg.batch_size, len(todo)), len(prompts))
        wanted = {p.id for p in prompts}
        records = [r for r in log.records if r["id"] in wanted]
    if cfg.keep == "better" and any(r.get("p_revision_better") is None for r in records):
        raise ValueError(f"{out / 'revisions.jsonl'}: some revisions were never judged (written with keep=changed); "
                         "keep=better needs a fresh out_dir")
    kept = usable(records, cfg)
    write_jsonl(out / "sft.jsonl", [{"prompt": r["prompt"], "response": r["revision"]} for r in kept])
    write_jsonl(out / "pairs.jsonl", [
        {"prompt": r["prompt"], "chosen": r["revision"], "rejected": r["response"], "metadata": {"principle": r["principle"]}}
        for r in kept
    ])
    return ReviseResult(out, records, kept)
