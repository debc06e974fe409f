"""Supervised fine-tuning on prompt/response pairs, with the loss on response tokens only.

Used by constitutional AI's supervised stage (fine-tune on the model's own revisions), and usable
on any prompt/response JSONL. LoRA by default; the adapter is saved in peft's format.
Under `accelerate launch` (`rlhf.distributed`) the processes share every batch (each takes every N-th
example; the shares' losses add up to the batch's token-mean loss) and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from rlhf.config import save_config
from rlhf.cpu import setup_cpu
from rlhf.data import DataError, JsonlAppender, read_records
from rlhf.distributed import Runtime, make_runtime
from rlhf.generation import format_prompt
from rlhf.models.lora import LoraSettings, apply_lora, save_adapter
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm

log = logging.getLogger(__name__)

RESPONSE_FIELDS = ("response", "revision", "completion", "chosen")


@dataclass(frozen=True)
class SFTConfig:
    model: str = DEFAULT_POLICY
    """Model to fine-tune (alias, folder or hub id)."""
    data: str = "runs/constitutional/sft.jsonl"
    """JSONL/CSV/Parquet with `prompt` and a response field (response, revision, completion or chosen), or a
    feedback export's rankings.jsonl: then each item's top consensus tier is the data (the labelers' choice)."""
    out_dir: str = "runs/sft"
    """Output folder: adapter/ (peft) and/or policy/ (full weights), metrics.jsonl, sft.yaml."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (lora.enabled=false trains every weight)."""
    epochs: float = 2.0
    """Passes over the data (fractions allowed)."""
    lr: float = 2e-4
    """AdamW learning rate."""
    batch_size: int = 8
    """Examples per optimizer step."""
    max_length: int = 256
    """Prompt + response tokens; the prompt is cut from the left first so the response survives."""
    system_prompt: str | None = None
    """Optional system message in the chat template."""
    seed: int = 0
    """Shuffling and initialisation seed."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""
    merge: bool = False
    """With LoRA, also save the adapter folded into the base weights as policy/: a full model folder that
    any `--model` accepts (what PPO starts from in `rlhf constitutional run`)."""


@dataclass
class SFTBatch:
    input_ids: torch.Tensor  # (B, L) right-padded
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L): response token ids, -100 on prompt and padding


@dataclass
class SFTResult:
    out_dir: Path
    policy_dir: Path
    steps: int
    losses: list[float]


def read_sft_records(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, response) pairs; the response is the first present of RESPONSE_FIELDS.

    A record with `ranking` and `completions` (a feedback export's rankings.jsonl) gives each completion of its
    best tier instead: fine-tuning on the labelers' choice among the policy's own samples (rejection-sampling
    fine-tuning, Touvron et al. 2023 sec. 3.2.3). An item whose completions all tie gives nothing.
    """
    out = []
    for lineno, rec in read_records(path, required=("prompt",)):
        if "ranking" in rec and "completions" in rec:
            comps = rec["completions"]
            if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
                raise DataError(f"{path}:{lineno}: `completions` must be a list of strings")
            out += [(rec["prompt"], comps[i]) for i in top_tier(rec["ranking"], len(comps), f"{path}:{lineno}")]
            continue
        key = next((k for k in RESPONSE_FIELDS if isinstance(rec.get(k), str)), None)
        if key is None:
            raise DataError(f"{path}:{lineno}: needs a response field, one of {', '.join(RESPONSE_FIELDS)}")
        out.append((rec["prompt"], rec[key]))
    return out


def top_tier(ranking: Sequence[Sequence[int]], n: int, where: str) -> list[int]:
    """The positions of a consensus ranking's best tier; none when it holds every completion (nothing chosen)."""
    if not ranking or not all(isinstance(t, list) and t for t in ranking):
        raise DataError(f"{where}: `ranking` must be a non-empty list of non-empty tiers, best first")
    best = ranking[0]
    if any(not isinstance(i, int) or not 0 <= i < n for i in best):
        raise DataError(f"{where}: `ranking` names completion {best} but the item has {n} completions")
    return [] if len(best) >= n else list(best)


def encode_example(tokenizer, prompt: str, response: str, max_length: int, system: str | None = None) -> tuple[list[int], int]:
    """Token ids of prompt + response + EOS, and how many leading ids belong to the prompt."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    p_ids = tokenizer(format_prompt(tokenizer, prompt, system), add_special_tokens=not templated)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    r_ids = r_ids[:max_length]
    p_ids = p_ids[max(0, len(p_ids) - (max_length - len(r_ids))) :] if len(r_ids) < max_length else []
    return p_ids + r_ids, len(p_ids)


def collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> SFTBatch:
    """Right-pad; labels are -100 wherever the loss must not look (prompt, padding)."""
    L = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), L), dtype=torch.long)
    labels = torch.full((len(examples), L), -100, dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
    return SFTBatch(ids, mask, labels)


def response_nll(model, batch: SFTBatch, total_tokens: int | None = None) -> torch.Tensor:
    """Mean next-token NLL over response tokens only (scalar); with `total_tokens`, the sum over this batch
    divided by the response tokens of the whole batch this one is a process's share of."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]  # (B, L-1, V)
    targets = batch.labels[:, 1:]  # (B, L-1)
    if total_tokens is None:
        return torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100)
    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="sum")
    return nll / max(total_tokens, 1)


def response_tokens(examples: Sequence[tuple[list[int], int]]) -> int:
    """Tokens `response_nll` averages over: response positions that have a preceding token."""
    return sum(len(seq) - max(n_prompt, 1) for seq, n_prompt in examples)


def train_sft(
    cfg: SFTConfig,
    records: Sequence[tuple[str, str]] | None = None,
    model_and_tokenizer: tuple | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    runtime: Runtime | None = None,
) -> SFTResult:
    """Fine-tune on (prompt, response) pairs; `records` overrides `cfg.data`. Under N processes (`runtime`
    defaults to `make_runtime()`) only rank 0 writes files and calls `on_step`."""
    rt = runtime or make_runtime()
    setup_cpu(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rt.is_main:
        save_config(cfg, out / "sft.yaml")
    records = list(records) if records is not None else read_sft_records(cfg.data)
    if not records:
        raise DataError(f"{cfg.data}: no (prompt, response) examples to fine-tune on")
    model, tok = model_and_tokenizer or load_causal_lm(cfg.model)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    model.eval()  # dropout off: the data are the model's own revisions, no need to regularise per step
    examples = [encode_example(tok, p, r, cfg.max_length, cfg.system_prompt) for p, r in records]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    train_model, opt = rt.prepare(model, opt)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses = []
    if rt.is_main:
        (out / "metrics.jsonl").unlink(missing_ok=True)  # no resume: a re-run starts over
    with JsonlAppender(out / "metrics.jsonl") if rt.is_main else contextlib.nullcontext() as mlog:
        for step in range(1, total + 1):
            if len(order) < cfg.batch_size:
                fresh = list(range(len(examples)))
                rng.shuffle(fresh)
                order += fresh
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            t0 = time.perf_counter()
            if rt.world_size == 1:
                loss = response_nll(train_model, collate([examples[i] for i in idx], tok.pad_token_id))
            else:  # every N-th example; a process left without one runs the first at weight 0 (DDP syncs every backward)
                mine = [examples[i] for i in idx[rt.rank :: rt.world_size]]
                share = response_nll(train_model, collate(mine or [examples[idx[0]]], tok.pad_token_id),
                                     response_tokens([examples[i] for i in idx]))
                loss = share * (1.0 if mine else 0.0)
            opt.zero_grad(set_to_none=True)
            rt.backward(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(rt.sum(loss.item()))
            if mlog is not None:
                mlog.append({"step": step, "loss": losses[-1], "seconds": time.perf_counter() - t0})
            if on_step and rt.is_main:
                on_step(step, total, losses[-1])
    policy_dir = out / ("adapter" if cfg.lora.enabled and not cfg.merge else "policy")
    if rt.is_main and cfg.lora.enabled:
        save_adapter(model, out / "adapter", tok)
        if cfg.merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(policy_dir)
            tok.save_pretrained(policy_dir)
    elif rt.is_main:
        model.save_pretrained(policy_dir)
        tok.save_pretrained(policy_dir)
    rt.barrier()  # the saved model is there when any process returns
    log.info("SFT: %d steps, loss %.3f -> %.3f; saved %s", total, losses[0], losses[-1], policy_dir)
    return SFTResult(out, policy_dir, total, losses)
