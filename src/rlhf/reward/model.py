"""RewardModel: an AutoModelForSequenceClassification (num_labels=1) read out as one scalar per text.

Pooling is done here, not by the HF head, because HF decoders find the last token as the rightmost
`id != pad_token_id`, which is wrong when pad == EOS (SmolLM2) and the text ends in EOS. We read the
attention mask instead, and give decoders position ids from the mask, so left and right padding
give the same score.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from rlhf.data import write_json
from rlhf.reward.data import EncodedPair, TextEncoder, TokenBatch, collate_pairs, length_grouped_batches, pad_batch

log = logging.getLogger(__name__)

SPEC_FILE = "reward_model.json"
STATS_FILE = "reward_stats.json"


@dataclass(frozen=True)
class RewardSpec:
    """How a saved reward model reads text; stored as reward_model.json beside the weights."""

    pooling: str
    max_length: int
    append_eos: bool
    decoder: bool
    trunk: str = ""


def is_decoder_only(model: nn.Module) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    cfg = model.config
    return not getattr(cfg, "is_encoder_decoder", False) and cfg.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), mask (B, T) -> (B, H): the state at each row's last real token, any padding side."""
    t = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    last = (t * mask).argmax(-1)  # (B,) index of the rightmost 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), mask (B, T) -> (B, H) masked mean (sentence-transformers' pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@contextlib.contextmanager
def _quiet_fresh_head(fresh: bool) -> Iterator[None]:
    """A trunk has no score head yet; transformers' 'newly initialized' report is expected noise then."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    if fresh:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


class RewardModel(nn.Module):
    """Scalar reward r(prompt, response) on top of a sequence-classification model."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "auto", max_length: int = 256,
                 append_eos: bool | None = None, trunk: str = ""):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        decoder = is_decoder_only(model)
        if pooling == "auto":
            pooling = "last" if decoder else "mean"
        elif pooling == "native" and decoder:
            pooling = "last"  # what HF decoder heads mean to do, but found from the mask, not from pad ids
        if pooling not in ("native", "last", "mean"):
            raise ValueError(f"pooling must be auto, native, last or mean, not {pooling!r}")
        if append_eos is None:
            append_eos = decoder and tokenizer.eos_token_id is not None
        self.spec = RewardSpec(pooling, max_length, bool(append_eos), decoder, trunk)
        self.encoder = TextEncoder(tokenizer, max_length, self.spec.append_eos)
        self.padding_side = "right"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # only the id is borrowed; masks come from lengths
        self.pad_id = tokenizer.pad_token_id
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.pad_id

    # ------------------------------------------------------------------ loading / saving

    @classmethod
    def from_pretrained(cls, name: str | Path, pooling: str | None = None, max_length: int | None = None,
                        append_eos: bool | None = None) -> "RewardModel":
        """A trained reward-model folder (reads reward_model.json) or any trunk (head freshly initialised)."""
        from transformers import AutoModelForSequenceClassification

        from rlhf.models.registry import load_tokenizer, resolve

        path = resolve(name)
        spec_file = Path(path) / SPEC_FILE
        saved = json.loads(spec_file.read_text()) if spec_file.exists() else {}
        tok = load_tokenizer(path, padding_side="right")
        with _quiet_fresh_head(fresh=not saved):
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        if model.config.num_labels != 1:
            raise ValueError(f"{name}: a reward model needs num_labels=1, this one has {model.config.num_labels}")
        return cls(
            model, tok,
            pooling=pooling or saved.get("pooling", "auto"),
            max_length=max_length or saved.get("max_length", 256),
            append_eos=append_eos if append_eos is not None else saved.get("append_eos"),
            trunk=saved.get("trunk", str(name)),
        )

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        write_json(path / SPEC_FILE, asdict(self.spec))
        return path

    # ------------------------------------------------------------------ scoring

    def head(self) -> nn.Module:
        return self.model.score if hasattr(self.model, "score") else self.model.classifier

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """(N, T) token batch -> (N,) rewards."""
        mask = batch.attention_mask
        if self.spec.pooling == "native":
            kw = {"token_type_ids": batch.token_type_ids} if batch.token_type_ids is not None else {}
            return self.model(input_ids=batch.input_ids, attention_mask=mask, **kw).logits[:, 0]
        kw = {}
        if self.spec.decoder:
            # Positions count real tokens only, so a left-padded row sees the same positions as a right-padded one.
            kw = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "use_cache": False}
        if batch.token_type_ids is not None:
            kw["token_type_ids"] = batch.token_type_ids
        trunk = getattr(self.model, self.model.base_model_prefix)
        hidden = trunk(input_ids=batch.input_ids, attention_mask=mask, **kw).last_hidden_state  # (N, T, H)
        pooled = last_token_pool(hidden, mask) if self.spec.pooling == "last" else mean_pool(hidden, mask)  # (N, H)
        return self.head()(pooled)[:, 0]  # (N,)

    def batch(self, encoded: Sequence) -> TokenBatch:
        return pad_batch(encoded, self.pad_id, self.padding_side)

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Rewards (B,) float32 for prompt/completion pairs, batched by length."""
        was_training = self.training
        self.eval()
        enc = self.encoder.encode(prompts, completions)
        out = torch.empty(len(enc), dtype=torch.float32)
        for idx in length_grouped_batches([len(e.ids) for e in enc], batch_size, seed=None):
            out[idx] = self(self.batch([enc[i] for i in idx])).float()
        self.train(was_training)
        return out

    @torch.inference_mode()
    def score_pairs(self, pairs: Sequence[EncodedPair], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded pairs -> (r_chosen (P,), r_rejected (P,)), one forward per batch of pairs."""
        was_training = self.training
        self.eval()
        rc, rr = torch.empty(len(pairs)), torch.empty(len(pairs))
        for idx in length_grouped_batches([p.length for p in pairs], batch_size, seed=None):
            batch = collate_pairs([pairs[i] for i in idx], self.pad_id, self.padding_side)
            rc[idx], rr[idx] = batch.rewards(self(batch.tokens).float())
        self.train(was_training)
        return rc, rr
