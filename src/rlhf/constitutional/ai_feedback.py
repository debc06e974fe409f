"""Constitutional AI, RL stage: preference labels from AI feedback (RLAIF) instead of people.

A feedback model reads a prompt and two responses and is asked which one better follows a
principle; the preference is read from its next-token probabilities of "A" and "B" (Bai et al.
2022, sec. 4.1). Each pair is asked in both orders: the average cancels position bias, and the
two answers together show how often the judge's choice flips with the order alone.

Items come from `rlhf generate` output or from a labeling project in the feedback store; with a
project, every judgement is also written into the store as a labeler named after the model, so
AI labels can be audited and compared with the human labelers'. The pairs feed `rlhf train-reward`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rlhf.config import save_config
from rlhf.constitutional.constitution import Principle, load_constitution, pick_principle
from rlhf.constitutional.prompts import comparison_prompt
from rlhf.data import DataError, JsonlAppender, read_generations, write_jsonl
from rlhf.feedback.config import DEFAULT_DB
from rlhf.feedback.rankings import tiers_from_scores
from rlhf.generation import encode_texts, position_ids_from_mask
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm
from rlhf.types import Generation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AIFeedbackConfig:
    model: str = DEFAULT_POLICY
    """Feedback model that compares responses (alias, folder or hub id); it may differ from the policy."""
    generations: str | None = "runs/generate/completions.jsonl"
    """`rlhf generate` output: prompts with 2+ completions each (ignored when `project` is set)."""
    project: str | None = None
    """Label this feedback-store project's items instead, and write the judgements into the store."""
    db: str = DEFAULT_DB
    """Feedback store (SQLite path or database URL) holding `project`."""
    labeler: str | None = None
    """Name of the AI labeler in the store (null = "ai:" + the model's name)."""
    constitution: str | None = None
    """YAML file of principles (null = the built-in constitution)."""
    out_dir: str = "runs/ai_feedback"
    """Output: judgements.jsonl (every comparison, resumable), pairs.jsonl (prompt, chosen, rejected)."""
    min_confidence: float = 0.0
    """Treat a pair as a tie, and drop it, when |2 p - 1| is at most this."""
    batch_size: int = 16
    """Comparisons per forward pass."""
    max_context_tokens: int = 768
    """Comparison prompt tokens; the request and each response are cut separately to fit."""
    seed: int = 0
    """Picks each prompt's principle."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""


@dataclass(frozen=True)
class PairVerdict:
    """The judge on completions i and j of one item, asked in both orders."""

    i: int
    j: int
    p_ij: float
    """P("A") with completion i shown as (A)."""
    p_ji: float
    """P("A") with completion j shown as (A)."""

    @property
    def p(self) -> float:
        """P(i better than j), averaged over both orders (order (j, i) says 1 - P(i better))."""
        return 0.5 * (self.p_ij + 1.0 - self.p_ji)

    @property
    def consistent(self) -> bool:
        """The same completion wins in both orders (False: the choice flipped with the order)."""
        return (self.p_ij > 0.5) == (self.p_ji < 0.5)


@dataclass(frozen=True)
class ItemVerdict:
    id: str
    prompt: str
    completions: tuple[str, ...]
    principle: str
    pairs: tuple[PairVerdict, ...]

    def ranking(self, min_confidence: float = 0.0) -> tuple[tuple[int, ...], ...]:
        """Tiers of completion positions, best first: each completion scored by its summed win probability
        (pairs within `min_confidence` of a coin flip count as 0.5); identical completions tie."""
        scores = [0.0] * len(self.completions)
        for v in self.pairs:
            p = 0.5 if abs(2 * v.p - 1) <= min_confidence else v.p
            scores[v.i] += p
            scores[v.j] += 1 - p
        return tiers_from_scores(scores, tol=1e-6)

    @property
    def confidence(self) -> float:
        """Mean over pairs of the probability given to the preferred side (0.5 = coin flip, 1 = certain)."""
        return sum(max(v.p, 1 - v.p) for v in self.pairs) / len(self.pairs) if self.pairs else 0.5

    def to_record(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "completions": list(self.completions), "principle": self.principle,
                "pairs": [[v.i, v.j, round(v.p_ij, 6), round(v.p_ji, 6)] for v in self.pairs]}

    @classmethod
    def from_record(cls, r: dict) -> "ItemVerdict":
        return cls(r["id"], r["prompt"], tuple(r["completions"]), r["principle"],
                   tuple(PairVerdict(int(i), int(j), float(a), float(b)) for i, j, a, b in r["pairs"]))


def choice_ids(tok) -> tuple[int, int]:
    a, b = (tok(x, add_special_tokens=False)["input_ids"] for x in ("A", "B"))
    return a[0], b[0]


@torch.inference_mode()
def prob_first_better(model, tok, texts: Sequence[str], max_tokens: int) -> torch.Tensor:
    """P("A") / (P("A") + P("B")) at the assistant's first token for each formatted comparison: (N,)."""
    ids, mask = encode_texts(tok, texts, max_tokens)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), logits_to_keep=1).logits[:, -1]
    a, b = choice_ids(tok)
    return torch.softmax(logits[:, [a, b]].float(), dim=-1)[:, 0]


def judge_both_orders(model, tok, items: Sequence[tuple[str, str, str, Principle]], batch_size: int = 16,
                      max_tokens: int = 768) -> list[tuple[float, float]]:
    """(P(A | x first), P(A | y first)) per (prompt, x, y, principle)."""
    texts = []
    for prompt, x, y, pr in items:
        texts += [comparison_prompt(tok, prompt, x, y, pr, max_tokens), comparison_prompt(tok, prompt, y, x, pr, max_tokens)]
    probs: list[float] = []
    for k in range(0, len(texts), batch_size):
        probs += prob_first_better(model, tok, texts[k : k + batch_size], max_tokens).tolist()
    return [(probs[2 * k], probs[2 * k + 1]) for k in range(len(items))]


def judge_pairs(model, tok, items: Sequence[tuple[str, str, str, Principle]], batch_size: int = 16,
                max_tokens: int = 768) -> list[float]:
    """P(first response better) per (prompt, first, second, principle), averaged over both orders."""
    return [0.5 * (a + 1.0 - b) for a, b in judge_both_orders(model, tok, items, batch_size, max_tokens)]


def judge_items(model, tok, gens: Sequence[Generation], principles: Sequence[Principle], cfg: AIFeedbackConfig) -> list[ItemVerdict]:
    """Every distinct pair of completions of every item, both orders, batched across items."""
    jobs, where = [], []
    for g in gens:
        pr = pick_principle(g.id, principles, cfg.seed)
        for i, j in itertools.combinations(range(len(g.completions)), 2):
            if g.completions[i] != g.completions[j]:  # identical texts tie without asking
                jobs.append((g.prompt, g.completions[i], g.completions[j], pr))
            where.append((g.id, i, j))
    probs = iter(judge_both_orders(model, tok, jobs, cfg.batch_size, cfg.max_context_tokens))
    by_item: dict[str, list[PairVerdict]] = {g.id: [] for g in gens}
    comps = {g.id: g.completions for g in gens}
    for gid, i, j in where:
        p_ij, p_ji = next(probs) if comps[gid][i] != comps[gid][j] else (0.5, 0.5)
        by_item[gid].append(PairVerdict(i, j, p_ij, p_ji))
    return [ItemVerdict(g.id, g.prompt, tuple(g.completions), pick_principle(g.id, principles, cfg.seed).name, tuple(by_item[g.id]))
            for g in gens]


def verdict_pairs(verdicts: Sequence[ItemVerdict], min_confidence: float) -> tuple[list[dict], int]:
    """Preference pairs (preferred first, confidence in metadata) and how many were dropped as ties."""
    pairs, dropped = [], 0
    for it in verdicts:
        for v in it.pairs:
            if it.completions[v.i] == it.completions[v.j] or abs(2 * v.p - 1) <= min_confidence:
                dropped += 1
                continue
            win, lose, pw = (v.i, v.j, v.p) if v.p > 0.5 else (v.j, v.i, 1 - v.p)
            pairs.append({"prompt": it.prompt, "chosen": it.completions[win], "rejected": it.completions[lose],
                          "metadata": {"item_id": it.id, "principle": it.principle, "p_chosen": round(pw, 4),
                                       "chosen_index": win, "rejected_index": lose, "consistent": v.consistent}})
    return pairs, dropped


@dataclass(frozen=True)
class AIFeedbackSummary:
    prompts: int
    pairs: int
    dropped: int
    """Pairs left out as ties (identical completions, or within min_confidence of a coin flip)."""
    position_bias: float | None
    """Share of comparisons whose choice flipped when the two responses swapped places."""
    mean_confidence: float | None
    labeler: str | None = None
    stored: int = 0
    """Judgements written into the feedback store by this run."""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_ai_feedback(
    cfg: AIFeedbackConfig,
    model_and_tokenizer: tuple | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AIFeedbackSummary:
    """Judge every item not yet in judgements.jsonl, write the labels to the store (with a project), and pairs.jsonl."""
    from rlhf.constitutional import ai_labels

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    principles = load_constitution(cfg.constitution).principles  # a bad file fails before anything is written
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "ai_feedback.yaml")
    if cfg.project:
        gens = ai_labels.project_items(cfg.db, cfg.project)
    elif cfg.generations:
        gens = read_generations(cfg.generations)
    else:
        raise DataError("ai-feedback needs `generations` (an `rlhf generate` output) or a feedback `project`")
    if any(len(g.completions) < 2 for g in gens):
        raise DataError(f"{cfg.project or cfg.generations}: AI feedback compares completions: every item needs at least 2")
    with JsonlAppender(out / "judgements.jsonl") as jlog:
        done = {r["id"] for r in jlog.records}
        todo = [g for g in gens if g.id not in done]
        if on_progress:
            on_progress(len(gens) - len(todo), len(gens))
        if todo:
            model, tok = model_and_tokenizer or load_causal_lm(cfg.model)
            per_chunk = max(1, cfg.batch_size // 2)
            for k in range(0, len(todo), per_chunk):
                for v in judge_items(model, tok, todo[k : k + per_chunk], principles, cfg):
                    jlog.append(v.to_record())
                if on_progress:
                    on_progress(len(gens) - len(todo) + min(k + per_chunk, len(todo)), len(gens))
        wanted = {g.id for g in gens}
        verdicts = [ItemVerdict.from_record(r) for r in jlog.records if r["id"] in wanted]
    labeler, stored = None, 0
    if cfg.project:
        labeler = cfg.labeler or ai_labels.labeler_name(cfg.model)
        stored = ai_labels.record_ai_labels(cfg.db, cfg.project, labeler, cfg.model, verdicts, cfg.min_confidence)
    pairs, dropped = verdict_pairs(verdicts, cfg.min_confidence)
    write_jsonl(out / "pairs.jsonl", pairs)
    comparisons = [v for it in verdicts for v in it.pairs if it.completions[v.i] != it.completions[v.j]]
    summary = AIFeedbackSummary(
        len(verdicts), len(pairs), dropped,
        sum(not v.consistent for v in comparisons) / len(comparisons) if comparisons else None,
        sum(max(v.p, 1 - v.p) for v in comparisons) / len(comparisons) if comparisons else None,
        labeler, stored,
    )
    log.info("AI feedback: %d pairs from %d items (%d ties dropped); position bias %s", summary.pairs, summary.prompts,
             dropped, summary.position_bias)
    return summary
