"""A causal LM as a policy: one trunk forward gives the log-probs (and entropy) of each response token.

The trunk's last hidden states at positions P-1 .. P+T-2 predict response tokens 0 .. T-1; only
those rows go through the (large) LM head, never the prompt positions. A frozen head (LoRA) runs
through `rlhf.models.fused.head_logprobs`, which never holds the (B, T, V) logits. `PolicyWithValueHead`
(PPO) adds a value head on the same trunk; RLOO, GRPO and DPO use `CausalPolicy` as is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from rlhf.generation import CACHE_KW, cache_of, position_ids_from_mask, shared_prompts
from rlhf.models.fused import head_logprobs, recompute_activations
from rlhf.policy.losses import logprobs_and_entropy, logprobs_from_logits


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def response_hidden(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Trunk hidden states that predict each response token: (B, P+T) ids -> (B, T, H).

    Rows that repeat a prompt (k samples of one prompt; DPO's chosen and rejected) run its forward once, and their
    responses attend to its KV cache, repeated per row; with gradients too (the repeat sums them back). Every forward
    of the toolkit takes this path, so two of them on the same rows (policy and reference at step 0) agree exactly."""
    trunk = unwrap(lm).get_decoder()
    shared = shared_prompts(input_ids[:, :prompt_len], attention_mask[:, :prompt_len])
    with recompute_activations(trunk) if torch.is_grad_enabled() else contextlib.nullcontext():
        if shared is not None:
            return _shared_prompt_hidden(trunk, input_ids, attention_mask, prompt_len, *shared)
        out = trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
    # contiguous: on a strided slice, F.linear with the frozen LM head falls back to a bmm that multiplies the
    # (V, H) weight once per sequence, 1.6x slower than one matmul at the 124M shape (docs/policy.md, profile)
    return out.last_hidden_state[:, prompt_len - 1 : -1].contiguous()  # (B, T, H)


def _shared_prompt_hidden(trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                          first: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`response_hidden` when rows repeat prompts (k samples each): each distinct prompt's forward runs once, and the
    responses attend to its KV cache, repeated for its rows."""
    P, pos = prompt_len, position_ids_from_mask(attention_mask)
    pre = trunk(input_ids=input_ids[first, :P], attention_mask=attention_mask[first, :P], position_ids=pos[first, :P],
                use_cache=True)
    cache = cache_of(pre)
    cache.reorder_cache(rows)
    out = trunk(input_ids=input_ids[:, P:], attention_mask=attention_mask, position_ids=pos[:, P:], use_cache=True,
                **{CACHE_KW: cache})
    last = pre.last_hidden_state[:, -1:][rows]  # (B, 1, H): the prompt's last state predicts response token 0
    return torch.cat([last, out.last_hidden_state[:, :-1]], 1).contiguous()  # (B, T, H)


@contextlib.contextmanager
def last_hidden_states(lm: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the trunk's last-position hidden state, (B, H), at every forward call inside the block.

    Under the KV-cache sampler, call t's state is the one that predicted response token t: the rows a
    `response_hidden` forward would return, without that forward (PPO's values from the rollout).
    """
    states: list[torch.Tensor] = []

    def keep(module, args, out):
        h = out[0] if isinstance(out, tuple) else out.last_hidden_state
        states.append(h[:, -1].clone())  # a copy: a view would keep the prefill's (B, P, H) alive

    handle = unwrap(lm).get_decoder().register_forward_hook(keep)
    try:
        yield states
    finally:
        handle.remove()


def response_logits(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, T, V) through the model's own LM head."""
    return unwrap(lm).get_output_embeddings()(hidden)


def response_logprobs(
    lm: nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T, H) hidden states, (B, T) response ids -> (B, T) log-probs under softmax(logits / temperature), and the
    (B, T) entropy with `with_entropy` (else None). A frozen plain-Linear head takes the fused path."""
    head = unwrap(lm).get_output_embeddings()
    if type(head) is nn.Linear and not any(p.requires_grad for p in head.parameters()):
        return head_logprobs(hidden, head, tokens, temperature, with_entropy)
    logits = head(hidden)  # (B, T, V)
    if with_entropy:
        return logprobs_and_entropy(logits, tokens, temperature)
    return logprobs_from_logits(logits, tokens, temperature), None


@dataclass
class PolicyOutput:
    logprobs: torch.Tensor  # (B, T) log pi(response token t) at the given temperature
    entropy: torch.Tensor | None  # (B, T) entropy of each next-token distribution; None unless asked for
    values: torch.Tensor | None  # (B, T) V(s_t), the value of the state before response token t; None without a head


class CausalPolicy(nn.Module):
    """A causal LM (optionally peft-wrapped) whose forward returns response logits only."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    @property
    def lm(self) -> nn.Module:
        """The transformers causal LM (adapter layers injected when LoRA is on); used for sampling."""
        return unwrap(self.policy)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, with_values: bool = False,
        with_entropy: bool = False, temperature: float = 1.0,
    ) -> PolicyOutput:
        h = response_hidden(self.policy, input_ids, attention_mask, prompt_len)  # (B, T, H)
        lp, ent = response_logprobs(self.policy, h, input_ids[:, prompt_len:], temperature, with_entropy)
        return PolicyOutput(lp, ent, None)
