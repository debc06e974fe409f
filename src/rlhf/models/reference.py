"""The frozen reference policy for the KL penalty.

With LoRA on, the reference is the policy with its adapter disabled (peft's `disable_adapter()`),
so no second copy of the weights exists. Without LoRA it is a frozen deep copy taken before training.
Both paths run the exact same trunk + LM head code as the policy, so at step 0 the reference and
policy log-probs are bit-identical and the KL is exactly 0.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from rlhf.models.lora import is_peft
from rlhf.models.policy import response_hidden, response_logprobs


class ReferencePolicy:
    def __init__(self, policy: nn.Module):
        self.policy = policy
        self.shares_weights = is_peft(policy)
        self.frozen: nn.Module | None = None
        if not self.shares_weights:
            self.frozen = copy.deepcopy(policy).eval().requires_grad_(False)

    def _context(self):
        return self.policy.disable_adapter() if self.shares_weights else contextlib.nullcontext()

    @torch.no_grad()
    def logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, temperature: float = 1.0
    ) -> torch.Tensor:
        """Reference log-probs of the response tokens: (B, P+T) -> (B, T)."""
        lm = self.policy if self.shares_weights else self.frozen
        with self._context():
            h = response_hidden(lm, input_ids, attention_mask, prompt_len)  # (B, T, H)
            return response_logprobs(lm, h, input_ids[:, prompt_len:], temperature)[0]
