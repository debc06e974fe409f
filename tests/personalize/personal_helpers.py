"""Shared by the personalisation tests: a tiny BERT trunk, synthetic two-group tastes, a chat app with a tiny LM."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from rlhf.types import PreferencePair

ADMIN = "personal-admin-token"
WORDS = "the quick brown fox jumps over lazy dog my house is too hot you can cool it with air".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "great", "awful", "question", *WORDS]


def save_tiny_bert(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1, pad_token_id=0)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def taste_pairs(n: int, likes: str, seed: int, user: int = 0) -> list[PreferencePair]:
    """A user who prefers replies with `likes` ('great' or 'awful') over replies with the other word."""
    rng = random.Random(seed)
    other = "awful" if likes == "great" else "great"

    def reply(word: str) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), word)
        return " ".join(words)

    return [PreferencePair(f"question {rng.choice(WORDS)} {rng.choice(WORDS)}", reply(likes), reply(other), 1.0,
                           {"user": user, "judgement_id": seed * 1000 + i}) for i in range(n)]


def make_adapter(lm_dir, personal_dir, key: str, version: int, seed: int):
    """A LoRA adapter with random (non-zero) B, saved where `rlhf personalize` would put it; its AdapterRef."""
    from rlhf.models.lora import LoraSettings, apply_lora, save_adapter
    from rlhf.models.registry import load_causal_lm
    from rlhf.personalize.serving import AdapterRef

    model, tok = load_causal_lm(lm_dir)
    peft = apply_lora(model, LoraSettings(r=4))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    rel = f"adapters/{key}/v{version:04d}/adapter"
    save_adapter(peft, personal_dir / rel, tok)
    return AdapterRef(key, version, rel, "none")
