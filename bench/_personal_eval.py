"""Evaluation helpers of bench/personalize.py: policies on held-out prompts, rewards on held-out choices, memory."""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from rlhf.evaluate.metrics import Estimate, bootstrap_mean, paired_bootstrap
from rlhf.evaluate.verdict import VerdictRules
from rlhf.generation import encode_texts, format_messages
from rlhf.models.lora import load_adapter
from rlhf.models.policy import response_hidden, response_logprobs
from rlhf.models.registry import load_causal_lm

# ------------------------------------------------------------------------------------ the tastes (gold functions)

LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.M)


def words(text: str) -> int:
    return len(text.split())


def structure(text: str) -> int:
    """List items plus line breaks between non-empty lines: 0 for one plain paragraph."""
    lines = [x for x in text.splitlines() if x.strip()]
    return len(LIST_ITEM.findall(text)) + max(0, len(lines) - 1)


@dataclass(frozen=True)
class Taste:
    name: str
    gold: Callable[[str], float]
    """Higher = more to this user's taste."""
    statement: str
    scale: float
    """Bradley-Terry temperature of the simulated choice, in gold units."""


TASTES = {
    "concise": Taste("concise", lambda t: -words(t), "prefers fewer words (gold = -word count)", 4.0),
    "detailed": Taste("detailed", lambda t: words(t), "prefers more words (gold = word count)", 4.0),
    "lists": Taste("lists", lambda t: structure(t), "prefers structure (gold = list items + line breaks)", 0.5),
    "prose": Taste("prose", lambda t: -structure(t), "prefers one plain paragraph (gold = -(list items + line breaks))", 0.5),
}


def choose(taste: Taste, a: str, b: str, rng) -> str:  # noqa: ANN001
    """A simulated person: tie when the gold is equal, else A with probability sigma((g_A - g_B) / scale)."""
    d = taste.gold(a) - taste.gold(b)
    if d == 0:
        return "tie"
    return "A" if rng.random() < 1.0 / (1.0 + np.exp(-d / taste.scale)) else "B"


# ------------------------------------------------------------------------------------ statistics


def est(values: Sequence[float], seed: int = 0) -> dict:
    e: Estimate = bootstrap_mean(values, seed=seed)
    return {"mean": e.value, "low": e.low, "high": e.high, "n": len(values)}


def fmt(e: dict, pct: bool = False, digits: int = 2) -> str:
    if not e or e.get("n", 0) == 0:
        return "n/a"
    k = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    return f"{k * e['mean']:.{0 if pct else digits}f}{unit} [{k * e['low']:.{0 if pct else digits}f}, {k * e['high']:.{0 if pct else digits}f}]"


def fluency_vs(policy: Sequence[float], base: Sequence[float], per_prompt: int) -> dict:
    """Paired fluency change against the base, on each prompt's mean over its replies (the demo's helpfulness test:
    the relative CI's worst end must stay above -5%, rlhf.evaluate.verdict)."""
    def means(v: Sequence[float]) -> list[float]:
        return [float(np.mean(v[i : i + per_prompt])) for i in range(0, len(v), per_prompt)]

    a, b = means(policy), means(base)
    d = paired_bootstrap(a, b)
    return {k: {"mean": e.value, "low": e.low, "high": e.high, "n": len(a)} for k, e in (("diff", d.diff),
                                                                                        ("relative", d.relative))}


def within_bounds(kl: dict, fluency: dict | None, target_kl: float) -> str:
    """The demo's bounds (rlhf.evaluate.verdict defaults): KL <= 1.5 x target; fluency non-inferior at 5%."""
    rules = VerdictRules()
    bad = [f"KL > {rules.kl_factor:g}x{target_kl:g}"] if kl["mean"] > rules.kl_factor * target_kl else []
    if fluency is None:
        return "; ".join(bad + ["fluency test not run"])
    if not fluency["relative"]["low"] > -rules.margin:
        bad.append(f"fluency CI below -{rules.margin:.0%}")
    return "; ".join(bad) or "within"


# ------------------------------------------------------------------------------------ log-probs of replies


@torch.no_grad()
def reply_logprobs(lm, tok, messages: Sequence[list[dict]], replies: Sequence[Sequence[int]], temperature: float,
                   max_prompt_tokens: int = 512, batch: int = 8) -> list[torch.Tensor]:
    """Per-token log-probs (at `temperature`) of each reply's own token ids after its chat-formatted conversation."""
    out: list[torch.Tensor] = []
    for i in range(0, len(replies), batch):
        texts = [format_messages(tok, m) for m in messages[i : i + batch]]
        ids, mask = encode_texts(tok, texts, max_prompt_tokens)
        rs = [list(r) or [tok.eos_token_id] for r in replies[i : i + batch]]
        width = max(len(r) for r in rs)
        resp = torch.full((len(rs), width), tok.pad_token_id, dtype=torch.long)  # (B, T)
        rmask = torch.zeros((len(rs), width), dtype=torch.long)
        for j, r in enumerate(rs):
            resp[j, : len(r)] = torch.tensor(r)
            rmask[j, : len(r)] = 1
        seq, attn = torch.cat([ids, resp], 1), torch.cat([mask, rmask], 1)
        lp, _ = response_logprobs(lm, response_hidden(lm, seq, attn, ids.shape[1]), resp, temperature)  # (B, T)
        out += [lp[j, : len(r)].clone() for j, r in enumerate(rs)]
    return out


def fluency_and_kl(model_name: str, shared_dir: Path | None, adapters: dict[str, Path], replies: dict[str, list],
                   messages: list[list[dict]], temperature: float) -> dict[str, dict]:
    """Per policy: fluency (mean per-token log-prob under the base, T=1) and KL to the shared policy (k1, nats/reply).

    `replies[name]` holds each prompt's reply token ids; 'shared' names the shared policy's own replies.
    """
    base, tok = load_causal_lm(model_name)
    out: dict[str, dict] = {}
    for name, reps in replies.items():
        lp = reply_logprobs(base, tok, messages, reps, 1.0)
        values = [float(x.mean()) for x in lp]
        out[name] = {"fluency": est(values), "fluency_values": values, "tokens": est([len(x) for x in lp])}
    del base
    gc.collect()
    for name, path in adapters.items():
        shared, tok = load_causal_lm(model_name)
        if shared_dir is not None:
            shared = load_adapter(shared, shared_dir, merge=True)
        policy = load_adapter(shared, path)
        lp_user = reply_logprobs(policy, tok, messages, replies[name], temperature)
        with policy.disable_adapter():
            lp_ref = reply_logprobs(policy, tok, messages, replies[name], temperature)
        out[name]["kl_to_shared"] = est([float((a - b).sum()) for a, b in zip(lp_user, lp_ref)])
        del policy, shared
        gc.collect()
    return out


# ------------------------------------------------------------------------------------ memory


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def adapter_mb(path: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        return sum(f.get_tensor(k).numel() * 4 for k in f.keys()) / 2**20
