"""The shared core of every online optimiser: sample -> score -> old log-probs (the sampler's, or one forward; PPO: values)
+ reference log-probs (the adapter off). Also `evaluate_policy`: sample, score and KL to the reference."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from rlhf.distributed import Runtime
from rlhf.generation import SamplingConfig, decode_responses, encode_prompts, eos_ids, shared_prompts
from rlhf.generator import generate, sampling_context
from rlhf.models.policy import CausalPolicy, last_hidden_states
from rlhf.models.reference import ReferencePolicy
from rlhf.models.value_head import PolicyWithValueHead
from rlhf.policy.experience import Rollout
from rlhf.policy.losses import masked_whiten
from rlhf.reward.functions import RewardFunction


def generate_rollout(
    model: CausalPolicy,
    tokenizer,
    prompts: Sequence[str],
    sampling: SamplingConfig,
    max_prompt_tokens: int,
    system_prompt: str | None = None,
    generator: torch.Generator | None = None,
    with_logprobs: bool = False,
    with_hidden: bool = False,
) -> Rollout:
    """Sample one completion per prompt with the configured generator (default: the KV-cache sampler);
    `with_logprobs`: keep the sampler's log-probs and entropies when the backend gives them; `with_hidden`: also
    the trunk states that predicted each token (PPO's values), when the backend runs the model's own trunk."""
    ids, mask = encode_prompts(tokenizer, prompts, max_prompt_tokens, system_prompt)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    capture = last_hidden_states(model.lm) if with_hidden else contextlib.nullcontext([])
    with sampling_context(model.policy, sampling.backend), capture as states:
        out = generate(model.lm, ids, mask, sampling, eos_ids(tokenizer, model.lm), tokenizer.pad_token_id, generator,
                       with_logprobs)
    T = out.response_mask.size(1)
    if states and states[0].size(0) != ids.size(0):  # the prefill ran once per distinct prompt: repeat its states
        states[0] = states[0][shared_prompts(ids, mask)[1]]
    hidden = torch.stack(states, 1) if len(states) == T else None  # (B, T, H): one trunk call per token, else none
    return Rollout(
        prompts=list(prompts), completions=decode_responses(tokenizer, out), sequences=out.sequences,
        attention_mask=out.attention_mask, response_mask=out.response_mask, finished=out.finished,
        prompt_len=out.prompt_len, logprobs=out.logprobs, entropy=out.entropy, hidden=hidden,
    )


def score_rollout(reward_fn: RewardFunction, rollout: Rollout) -> torch.Tensor:
    """Raw reward per completion: (B,) float32."""
    scores = torch.as_tensor(reward_fn(rollout.prompts, rollout.completions), dtype=torch.float32).flatten()
    scores = scores.to(rollout.finished.device)
    if scores.numel() != len(rollout.completions):
        raise ValueError(f"reward {getattr(reward_fn, 'name', reward_fn)!r} returned {scores.numel()} scores for {len(rollout.completions)} completions")
    return scores


def process_scores(
    raw: torch.Tensor,
    finished: torch.Tensor,
    normalization: tuple[float, float] | None = None,
    whiten: bool = False,
    clip: float | None = None,
    missing_eos_penalty: float | None = None,
) -> torch.Tensor:
    """(B,) raw scores -> (B,) training scores: normalise with saved stats, EOS penalty, whiten, clip."""
    s = raw.float()
    if normalization is not None:
        mean, std = normalization
        s = (s - mean) / max(float(std), 1e-8)
    if missing_eos_penalty is not None:
        s = s - missing_eos_penalty * (~finished).float()
    if whiten and s.numel() > 1:
        s = masked_whiten(s, torch.ones_like(s))
    if clip is not None:
        s = s.clamp(-clip, clip)
    return s


@dataclass
class ForwardStats:
    old_logprobs: torch.Tensor  # (B, T)
    ref_logprobs: torch.Tensor  # (B, T)
    values: torch.Tensor | None  # (B, T), None without a value head
    entropy: torch.Tensor  # (B, T)


@torch.no_grad()
def forward_experience(
    model: CausalPolicy, reference: ReferencePolicy, rollout: Rollout, temperature: float, chunk: int
) -> ForwardStats:
    """Old log-probs (and values, with a value head) from ONE policy forward, plus reference log-probs; `chunk` rows at a time.

    When the rollout carries the sampler's log-probs, the policy forward is skipped; with a value head, the values
    come from the sampler's trunk states when the rollout kept them, else from a trunk forward without the LM head.
    """
    parts: list[tuple[torch.Tensor | None, ...]] = []
    P = rollout.prompt_len
    sampled = rollout.logprobs is not None and rollout.entropy is not None
    for start in range(0, rollout.sequences.size(0), chunk):
        seq = rollout.sequences[start : start + chunk]
        attn = rollout.attention_mask[start : start + chunk]
        lp = ent = values = None
        if not sampled:
            out = model(seq, attn, P, with_values=True, with_entropy=True, temperature=temperature)
            lp, ent, values = out.logprobs, out.entropy, out.values
            del out
        elif isinstance(model, PolicyWithValueHead):
            values = (model.value_head(rollout.hidden[start : start + chunk]).squeeze(-1).float()
                      if rollout.hidden is not None and model.critic is None else model.values(seq, attn, P))
        ref = reference.logprobs(seq, attn, P, temperature)
        parts.append((lp, ref, values, ent))
    mask = rollout.response_mask
    lp, ref, values, ent = zip(*parts)
    if sampled:
        lp, ent = (rollout.logprobs,), (rollout.entropy,)
    return ForwardStats(
        torch.cat(lp) * mask, torch.cat(ref) * mask, torch.cat(values) * mask if values[0] is not None else None,
        torch.cat(ent) * mask,
    )


def _pad(t: torch.Tensor, left: int, right: int, value: float | int) -> torch.Tensor:
    """Pad the last dim of a (B, L) tensor with `left`/`right` columns of `value`."""
    return torch.nn.functional.pad(t, (left, right), value=value) if left or right else t


def gather_rollout(
    rt: Runtime, r: Rollout, raw: torch.Tensor, fwd: ForwardStats, pad_id: int
) -> tuple[Rollout, torch.Tensor, ForwardStats]:
    """Every process's rollout shard (+ raw scores and forward stats) as one global batch, in rank order.

    Prompts are re-padded on the left to the longest prompt and responses on the right to the longest
    response, so the rows are exactly those of a one-process batch; in one process this is the identity.
    """
    if rt.world_size == 1:
        return r, raw, fwd
    P, T = rt.max(r.prompt_len), rt.max(r.response_mask.size(1))
    dp, dt = P - r.prompt_len, T - r.response_mask.size(1)

    def seq(x: torch.Tensor, value: int) -> torch.Tensor:  # (b, P_r + T_r) -> (B, P + T)
        return rt.gather(torch.cat([_pad(x[:, : r.prompt_len], dp, 0, value), _pad(x[:, r.prompt_len :], 0, dt, value)], 1))

    def resp(x: torch.Tensor | None) -> torch.Tensor | None:  # (b, T_r) -> (B, T)
        return None if x is None else rt.gather(_pad(x, 0, dt, 0))

    out = Rollout(
        prompts=rt.gather_object(r.prompts), completions=rt.gather_object(r.completions),
        sequences=seq(r.sequences, pad_id), attention_mask=seq(r.attention_mask, 0),
        response_mask=resp(r.response_mask), finished=rt.gather(r.finished), prompt_len=P,
    )
    stats = ForwardStats(resp(fwd.old_logprobs), resp(fwd.ref_logprobs), resp(fwd.values), resp(fwd.entropy))
    return out, rt.gather(raw), stats


@dataclass
class EvalResult:
    mean_reward: float  # nan without a reward function
    std_reward: float
    kl: float  # mean per-response sum of k1 log-ratios to the reference (nats); nan without a reference
    mean_length: float
    completions: list[str]
    rewards: list[float]


@torch.no_grad()
def evaluate_policy(
    model: CausalPolicy,
    tokenizer,
    prompts: Sequence[str],
    reward_fn: RewardFunction | None,
    sampling: SamplingConfig,
    batch_size: int = 16,
    seed: int = 0,
    max_prompt_tokens: int = 128,
    system_prompt: str | None = None,
    reference: ReferencePolicy | None = None,
) -> EvalResult:
    """Sample once per prompt (seeded), score with `reward_fn` (if any); with a reference, also the KL to it (the
    policy's log-probs from the sampler when the backend keeps them, as an online step's old log-probs)."""
    gen = torch.Generator().manual_seed(seed)
    rewards, comps, kls, lens = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        r = generate_rollout(model, tokenizer, prompts[start : start + batch_size], sampling, max_prompt_tokens, system_prompt, gen,
                             with_logprobs=reference is not None)
        if reward_fn is not None:
            rewards += score_rollout(reward_fn, r).tolist()
        comps += r.completions
        lens += r.response_mask.sum(-1).tolist()
        if reference is not None:
            lp = r.logprobs if r.logprobs is not None else model(
                r.sequences, r.attention_mask, r.prompt_len, with_values=False, temperature=sampling.temperature).logprobs
            ref = reference.logprobs(r.sequences, r.attention_mask, r.prompt_len, sampling.temperature)
            kls += ((lp - ref) * r.response_mask).sum(-1).tolist()
    t = torch.tensor(rewards) if rewards else torch.full((1,), float("nan"))
    return EvalResult(
        mean_reward=float(t.mean()), std_reward=float(t.std()) if t.numel() > 1 else 0.0,
        kl=float(torch.tensor(kls).mean()) if kls else float("nan"), mean_length=float(torch.tensor(lens).mean()),
        completions=comps, rewards=rewards,
    )
