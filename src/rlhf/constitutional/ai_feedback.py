"""Constitutional AI, RL stage: preference labels from AI feedback (RLAIF) instead of people.

A feedback model reads a prompt and two responses and is asked which one better follows a
principle; the preference is read from its next-token probabilities of "A" and "B" (Bai et al.
2022, sec. 4.1). Each pair is asked in both orders and averaged, which cancels position bias.
The pairs feed `rlhf train-reward`, then `rlhf ppo`, as human pairs would.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rlhf.config import save_config
from rlhf.constitutional.constitution import Principle, load_constitution
from rlhf.constitutional.revise import pick_principle
from rlhf.data import read_generations, write_jsonl
from rlhf.generation import encode_texts, format_messages
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm


@dataclass(frozen=True)
class AIFeedbackConfig:
    model: str = DEFAULT_POLICY
    """Feedback model that compares responses (alias, folder or hub id)."""
    generations: str = "runs/generate/completions.jsonl"
    """`rlhf generate` output: prompts with 2+ completions each."""
    constitution: str | None = None
    """YAML file of principles (null = the built-in constitution)."""
    out_dir: str = "runs/ai_feedback"
    """Output: pairs.jsonl (prompt, chosen, rejected, metadata.p_chosen)."""
    min_confidence: float = 0.0
    """Drop pairs whose |2 p - 1| is below this (0 keeps all but exact ties)."""
    batch_size: int = 16
    """Comparisons per forward pass."""
    max_context_tokens: int = 768
    """Comparison prompt tokens kept (from the end)."""
    seed: int = 0
    """Picks each prompt's principle."""


def comparison_prompt(tok, prompt: str, first: str, second: str, principle: Principle) -> str:
    text = (
        f"Consider this request to an AI assistant:\n\n{prompt}\n\n"
        f"Which response is {principle.comparison}?\n\n(A) {first}\n\n(B) {second}\n\n"
        "Answer with the letter A or B only."
    )
    return format_messages(tok, [{"role": "user", "content": text}])


def choice_ids(tok) -> tuple[int, int]:
    a, b = (tok(x, add_special_tokens=False)["input_ids"] for x in ("A", "B"))
    return a[0], b[0]


@torch.inference_mode()
def prob_first_better(model, tok, texts: Sequence[str], max_tokens: int) -> torch.Tensor:
    """P("A") / (P("A") + P("B")) at the assistant's first token for each formatted comparison: (N,)."""
    ids, mask = encode_texts(tok, texts, max_tokens)
    from rlhf.generation import position_ids_from_mask

    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), logits_to_keep=1).logits[:, -1]
    a, b = choice_ids(tok)
    return torch.softmax(logits[:, [a, b]].float(), dim=-1)[:, 0]


def judge_pairs(model, tok, items: Sequence[tuple[str, str, str, Principle]], cfg: AIFeedbackConfig) -> list[float]:
    """P(first response better) per (prompt, first, second, principle), averaged over both orders."""
    texts = []
    for prompt, x, y, pr in items:
        texts += [comparison_prompt(tok, prompt, x, y, pr), comparison_prompt(tok, prompt, y, x, pr)]
    probs: list[float] = []
    for i in range(0, len(texts), cfg.batch_size):
        probs += prob_first_better(model, tok, texts[i : i + cfg.batch_size], cfg.max_context_tokens).tolist()
    # order (x, y) gives P(x first), order (y, x) gives P(y first) = 1 - P(x better)
    return [0.5 * (probs[2 * k] + 1.0 - probs[2 * k + 1]) for k in range(len(items))]


def run_ai_feedback(cfg: AIFeedbackConfig, model_and_tokenizer: tuple | None = None, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Label every pair of completions per prompt with AI feedback; write pairs.jsonl. Returns counts."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "ai_feedback.yaml")
    principles = load_constitution(cfg.constitution)
    gens = read_generations(cfg.generations)
    model, tok = model_and_tokenizer or load_causal_lm(cfg.model)
    pairs, dropped = [], 0
    for n, g in enumerate(gens, 1):
        pr = pick_principle(g.id, principles, cfg.seed)
        combos = [(i, j) for i, j in itertools.combinations(range(len(g.completions)), 2) if g.completions[i] != g.completions[j]]
        ps = judge_pairs(model, tok, [(g.prompt, g.completions[i], g.completions[j], pr) for i, j in combos], cfg)
        for (i, j), p in zip(combos, ps):
            if abs(2 * p - 1) <= cfg.min_confidence:
                dropped += 1
                continue
            win, lose, pw = (i, j, p) if p > 0.5 else (j, i, 1 - p)
            pairs.append({
                "prompt": g.prompt, "chosen": g.completions[win], "rejected": g.completions[lose],
                "metadata": {"item_id": g.id, "principle": pr.name, "p_chosen": round(pw, 4)},
            })
        if on_progress:
            on_progress(n, len(gens))
    write_jsonl(out / "pairs.jsonl", pairs)
    return {"prompts": len(gens), "pairs": len(pairs), "dropped": dropped}
