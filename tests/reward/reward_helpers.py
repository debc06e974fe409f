"""Helpers for reward tests: synthetic preferences and a tiny BERT (encoder path, named labels)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from rlhf.types import PreferencePair

WORDS = "the quick brown fox jumps over lazy dog my house is too hot you can cool it with air".split()
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "great", "awful", "prompt", "question", *WORDS]


def synthetic_pairs(n: int, seed: int = 0, word: str = "great") -> list[PreferencePair]:
    """The chosen response contains `word`, the rejected one does not; otherwise random text."""
    rng = random.Random(seed)

    def sent(lo: int = 3, hi: int = 10) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    pairs = []
    for i in range(n):
        words = sent().split()
        good = " ".join(words[: rng.randint(0, len(words))] + [word] + words[len(words) // 2 :])
        pairs.append(PreferencePair(f"question {i}: {sent(2, 6)}", good, sent()))
    return pairs


def save_tiny_bert(path: Path, num_labels: int = 1, id2label: dict | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(BERT_VOCAB)})
    cfg = BertConfig(
        vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, num_labels=num_labels, pad_token_id=0,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
