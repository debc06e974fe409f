"""Batched sampling with the KV cache, and `rlhf generate` on top of it.

`sample` is shared by `rlhf generate` and PPO rollouts. Prompts are left-padded, position ids
come from the attention mask (so padding never shifts RoPE positions), and the response mask is
built from where each row first emits EOS: with SmolLM2 the pad and EOS tokens are the same id,
so masks must never be derived from `ids == pad_id`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import transformers.utils.generic
from transformers.cache_utils import DynamicLayer

from rlhf.types import Generation, Prompt


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    """Upper bound on generated tokens per completion."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest token set whose probability reaches top_p."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    backend: str = "auto"
    """Sampler (rlhf.generator): hf (the KV-cache sampler below), vllm (needs vllm and a CUDA GPU), or auto (vllm
    when both are present, else hf)."""


@dataclass
class SampleOutput:
    """Prompt + response token ids; prompts left-padded to P, responses right-padded to T."""

    sequences: torch.Tensor  # (B, P+T) long
    attention_mask: torch.Tensor  # (B, P+T) long: 1 on real prompt tokens and on response tokens
    response_mask: torch.Tensor  # (B, T) float: 1 up to and including the first EOS
    finished: torch.Tensor  # (B,) bool: the row emitted EOS
    prompt_len: int  # P
    logprobs: torch.Tensor | None = None  # (B, T) log p(token) under softmax(logits / T), unfiltered; with_logprobs only
    entropy: torch.Tensor | None = None  # (B, T) entropy of that distribution; with_logprobs only
    raw_logprobs: torch.Tensor | None = None  # (B, T) log p(token) under softmax(logits), temperature 1; with_logprobs only

    @property
    def responses(self) -> torch.Tensor:  # (B, T)
        return self.sequences[:, self.prompt_len :]

    @property
    def response_lengths(self) -> torch.Tensor:  # (B,)
        return self.response_mask.sum(-1).long()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: (B, L) mask -> (B, L) positions starting at 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def shared_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Where rows repeat a prompt (k samples of one prompt, as grouped rollouts and `rlhf evaluate` lay them out):
    (U,) the first row of each distinct prompt and (B,) each row's index among those; None when all rows differ.
    A prompt's forward then runs once, and its KV cache is repeated for its k rows."""
    key = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], 1)  # (B, 2P)
    uniq, rows = torch.unique(key, dim=0, return_inverse=True)
    if uniq.size(0) == key.size(0):
        return None
    first = torch.full((uniq.size(0),), key.size(0), device=key.device)
    return first.scatter_reduce(0, rows, torch.arange(key.size(0), device=key.device), "amin"), rows


NUCLEUS_CANDIDATES = 1024
"""Tokens ranked before the nucleus is cut; rows whose nucleus is larger fall back to a full sort."""


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering of (B, V) logits; removed entries become -inf."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = _nucleus(logits, top_p)
    return logits


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens up to and including the one whose cumulative probability crosses top_p.

    Sorting a 49k vocabulary costs ~60 ms a step for 32 rows on 2 CPU threads, a fifth of a SmolLM2 decode
    step; the nucleus nearly always lies within the top 1,024 tokens, so those are ranked with `topk` and
    only rows whose nucleus is larger are sorted in full. Both give the same kept set.
    """
    V = logits.size(-1)
    lse = logits.logsumexp(-1, keepdim=True)  # (B, 1): the full softmax's normaliser, so p is exact
    k = min(NUCLEUS_CANDIDATES, V)
    vals, idx = torch.topk(logits, k, dim=-1)  # (B, k), descending
    p = (vals - lse).exp()
    cum = p.cumsum(-1)
    if k < V and not bool((cum[:, -1] >= top_p).all()):
        vals, idx = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        p = (vals - lse).exp()
        cum = p.cumsum(-1)
    drop = cum - p >= top_p  # (B, k): mass before this token already reaches top_p
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, vals.masked_fill(drop, float("-inf")))


@torch.inference_mode()
def sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cfg: SamplingConfig,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    with_logprobs: bool = False,
    share_prefill: bool = True,
) -> SampleOutput:
    """Sample continuations for a left-padded (B, P) batch, reusing the KV cache each step.

    `generator`: one stream for the batch, or one per row (a row's tokens then depend only on its own
    generator, not on the rest of the batch: how multi-process rollouts match a one-process run).
    `with_logprobs`: also return each drawn token's log-prob and the entropy under the temperature-scaled,
    unfiltered distribution: what an online optimiser's old-policy forward would compute, at ~2 ms a step; and the
    log-prob at temperature 1. Rows that repeat a prompt share one prefill (`shared_prompts`): the same draws;
    `share_prefill=False` where equal prompt ids do not mean equal rows (per-row adapters in `model`'s call).
    """
    B, P = input_ids.shape
    device = input_ids.device
    eos = torch.tensor(list(eos_token_ids), device=device)
    attn = attention_mask.long()
    pos = position_ids_from_mask(attn)
    shared = shared_prompts(input_ids, attn) if B > 1 and share_prefill else None
    first = slice(None) if shared is None else shared[0]
    out = model(input_ids=input_ids[first], attention_mask=attn[first], position_ids=pos[first], use_cache=True,
                logits_to_keep=1)
    past, logits = cache_of(out), out.logits[:, -1, :]  # (B or U, V)
    if shared is not None:  # each distinct prompt's prefill ran once: repeat its cache and logits for its rows
        past.reorder_cache(shared[1])
        logits = logits[shared[1]]
    past = preallocate(past, cfg.max_new_tokens)
    next_pos = pos[:, -1:] + 1  # (B, 1)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, masks, logprobs, entropies, raw = [], [], [], [], []
    for step in range(cfg.max_new_tokens):
        logits = logits.float()
        if cfg.temperature <= 0:
            tok = logits.argmax(-1)
        else:
            scaled = logits / cfg.temperature if cfg.temperature != 1.0 else logits
            probs = filter_logits(scaled, cfg.top_k, cfg.top_p).softmax(-1)
            tok = _draw(probs, generator)
            if with_logprobs:
                lse = scaled.logsumexp(-1)  # (B,)
                logprobs.append(scaled.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - lse)
                # H = lse - sum softmax(z) z; `probs` is that softmax when nothing was filtered
                p = probs if cfg.top_k <= 0 and cfg.top_p >= 1.0 else (scaled - lse.unsqueeze(-1)).exp()
                entropies.append(lse - (p * scaled).sum(-1))
                if scaled is not logits:  # the model's own likelihood too (a fluency judge's), ~1% of a step
                    raw.append(logits.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1))
        alive = ~finished
        tok = torch.where(alive, tok, torch.full_like(tok, pad_token_id))
        tokens.append(tok)
        masks.append(alive)
        finished = finished | (alive & torch.isin(tok, eos))
        if bool(finished.all()) or step == cfg.max_new_tokens - 1:
            break
        attn = torch.cat([attn, alive.long().unsqueeze(-1)], dim=-1)
        out = model(
            input_ids=tok.unsqueeze(-1), attention_mask=attn, position_ids=next_pos, use_cache=True, **{CACHE_KW: past},
        )
        past, next_pos, logits = cache_of(out), next_pos + 1, out.logits[:, -1, :]
    responses = torch.stack(tokens, dim=1)  # (B, T)
    response_mask = torch.stack(masks, dim=1)  # (B, T)
    kept = bool(logprobs)
    return SampleOutput(
        sequences=torch.cat([input_ids, responses], dim=1),
        attention_mask=torch.cat([attention_mask.long(), response_mask.long()], dim=1),
        response_mask=response_mask.float(),
        finished=finished,
        prompt_len=P,
        logprobs=torch.stack(logprobs, 1) * response_mask if kept else None,
        entropy=torch.stack(entropies, 1) * response_mask if kept else None,
        raw_logprobs=(torch.stack(raw or logprobs, 1) * response_mask) if kept else None,
    )


# transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40)
CACHE_KW = "cache" if hasattr(transformers.utils.generic, "_rename_kwargs_for_bc") else "past_key_values"


def cache_of(out):
    return getattr(out, CACHE_KW)


class _PreallocatedLayer(DynamicLayer):
    """A full-attention KV layer written in place into a buffer sized for the whole sample.

    `DynamicLayer` grows by `torch.cat`, which copies the whole cache every token: 13 ms of an 82 ms decode
    step at the GPT-2-124M shape, batch 16 (docs/policy.md). The keys and values returned are views of the buffer.
    """

    def __init__(self, layer: DynamicLayer, extra: int):
        super().__init__()
        k, v = layer.keys, layer.values  # (B, H, L, D)
        self.device, self.is_initialized, self.length = k.device, True, k.shape[-2]
        self._k = k.new_empty(*k.shape[:-2], self.length + extra, k.shape[-1])
        self._v = v.new_empty(*v.shape[:-2], self.length + extra, v.shape[-1])
        self._k[..., : self.length, :], self._v[..., : self.length, :] = k, v
        self.keys, self.values = self._k[..., : self.length, :], self._v[..., : self.length, :]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        self._k[..., self.length : self.length + n, :].copy_(key_states)
        self._v[..., self.length : self.length + n, :].copy_(value_states)
        self.length += n
        self.keys, self.values = self._k[..., : self.length, :], self._v[..., : self.length, :]
        return self.keys, self.values


def preallocate(cache, extra: int):
    """Swap a DynamicCache's plain full-attention layers for preallocated ones with room for `extra` tokens."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return cache
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4:
            layers[i] = _PreallocatedLayer(layer, extra)
    return cache


def _draw(probs: torch.Tensor, generator) -> torch.Tensor:
    """One token per row of (B, V) probs: (B,) ids."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(generator)]).view(-1)


def eos_ids(tokenizer, model=None) -> list[int]:
    """All ids that end a turn: the tokenizer's EOS plus the generation config's."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(extra)
    return sorted(i for i in ids if i is not None)


def format_messages(tokenizer, messages: Sequence[dict[str, str]]) -> str:
    """A conversation in the model's chat template, ready for the assistant's next turn.

    Without a template (plain LMs), turns are written as `role: content` lines.
    """
    if not getattr(tokenizer, "chat_template", None):
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + ("assistant:" if len(messages) > 1 else "")
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def format_prompt(tokenizer, text: str, system: str | None = None) -> str:
    """Wrap a user prompt in the model's chat template (plain text if it has none)."""
    if not getattr(tokenizer, "chat_template", None):
        return text
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return format_messages(tokenizer, msgs)


def encode_texts(tokenizer, texts: Sequence[str], max_tokens: int):
    """Left-pad already formatted texts -> (input_ids, attention_mask), keeping each text's tail."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    enc = tokenizer(
        list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_tokens,
        add_special_tokens=not templated,
    )
    return enc["input_ids"], enc["attention_mask"]


def encode_prompts(tokenizer, texts: Sequence[str], max_prompt_tokens: int, system: str | None = None):
    """Chat-format and left-pad prompts -> (input_ids, attention_mask), keeping each prompt's tail."""
    return encode_texts(tokenizer, [format_prompt(tokenizer, t, system) for t in texts], max_prompt_tokens)


def decode_responses(tokenizer, out: SampleOutput) -> list[str]:
    lens = out.response_lengths.tolist()
    return [
        tokenizer.decode(row[: n].tolist(), skip_special_tokens=True).strip()
        for row, n in zip(out.responses, lens)
    ]


def _seed_for(seed: int, ids: Iterable[str]) -> int:
    # Per-batch seed from the prompt ids, so a resumed run samples what the full run would have.
    h = hashlib.sha256((f"{seed}:" + "|".join(ids)).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class GenerationStats:
    prompts: int = 0
    completions: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    sampling: SamplingConfig,
    num_completions: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    max_prompt_tokens: int = 512,
    system: str | None = None,
    on_batch: Callable[[list[Generation], GenerationStats], None] | None = None,
    slot_systems: Sequence[str | None] | None = None,
) -> GenerationStats:
    """Sample `num_completions` per prompt in length-sorted batches; `on_batch` receives each batch's records.

    `slot_systems`: a system message per completion slot, overriding `system` (e.g. a second persona for the last
    few); the records then say which slots used another one (`metadata.alt_system`).
    """
    from rlhf.generator import generate  # the backend sampling.backend selects

    slots = list(slot_systems) if slot_systems is not None else [system] * num_completions
    if len(slots) != num_completions:
        raise ValueError(f"slot_systems has {len(slots)} entries for {num_completions} completions per prompt")
    stats = GenerationStats()
    per_batch = max(1, batch_size // num_completions)
    lengths = [len(tokenizer(format_prompt(tokenizer, p.prompt, slots[0]), add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    eos, pad = eos_ids(tokenizer, model), tokenizer.pad_token_id
    for start in range(0, len(order), per_batch):
        batch = [prompts[i] for i in order[start : start + per_batch]]
        texts = [format_prompt(tokenizer, p.prompt, sys_) for p in batch for sys_ in slots]
        ids, mask = encode_texts(tokenizer, texts, max_prompt_tokens)
        gen = torch.Generator().manual_seed(_seed_for(seed, [p.id for p in batch]))
        t0 = time.perf_counter()
        out = generate(model, ids, mask, sampling, eos, pad, gen)
        stats.seconds += time.perf_counter() - t0
        stats.tokens += int(out.response_mask.sum())
        texts_out = decode_responses(tokenizer, out)
        lens = out.response_lengths.tolist()
        records = []
        for j, p in enumerate(batch):
            sl = slice(j * num_completions, (j + 1) * num_completions)
            meta = dict(p.metadata) | {
                "num_tokens": lens[sl],
                "finished": out.finished[sl].tolist(),
            }
            if slot_systems is not None:
                meta["alt_system"] = [sys_ != slots[0] for sys_ in slots]
            records.append(Generation(p.id, p.prompt, tuple(texts_out[sl]), meta))
        stats.prompts += len(batch)
        stats.completions += len(batch) * num_completions
        if on_batch is not None:
            on_batch(records, stats)
    return stats
