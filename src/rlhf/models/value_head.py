"""PPO's policy + value head sharing one trunk: one forward pass gives response logits and values.

The LM head and the value head both read the trunk rows that predict response tokens
(`rlhf.models.policy`). A separate critic (its own trunk copy) is an option; it costs a second forward.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from rlhf.generation import position_ids_from_mask
from rlhf.models.policy import CausalPolicy, PolicyOutput, response_hidden, response_logprobs, unwrap


class PolicyWithValueHead(CausalPolicy):
    """A causal LM (optionally peft-wrapped) plus a scalar value head on its trunk."""

    def __init__(self, policy: nn.Module, separate_critic: bool = False):
        super().__init__(policy)
        hidden = unwrap(policy).config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        # Zero init: V = 0 at the start, so early advantages are just the (shaped) returns.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.critic: nn.Module | None = None
        if separate_critic:
            trunk = unwrap(policy).get_decoder()
            self.critic = copy.deepcopy(trunk).requires_grad_(True)  # trained in full, even with LoRA

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, with_values: bool = True,
        with_entropy: bool = False, temperature: float = 1.0,
    ) -> PolicyOutput:
        h = response_hidden(self.policy, input_ids, attention_mask, prompt_len)  # (B, T, H)
        lp, ent = response_logprobs(self.policy, h, input_ids[:, prompt_len:], temperature, with_entropy)
        return PolicyOutput(lp, ent, self._values(h, input_ids, attention_mask, prompt_len) if with_values else None)

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """V(s_t) alone, (B, P+T) -> (B, T): the trunk without the LM head (when the log-probs are known)."""
        h = None if self.critic is not None else response_hidden(self.policy, input_ids, attention_mask, prompt_len)
        return self._values(h, input_ids, attention_mask, prompt_len)

    def _values(self, h, input_ids, attention_mask, prompt_len) -> torch.Tensor:
        if self.critic is not None:
            ch = self.critic(
                input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False,
            ).last_hidden_state[:, prompt_len - 1 : -1]
        else:
            ch = h
        return self.value_head(ch).squeeze(-1).float()  # (B, T)

    def value_state_dict(self) -> dict[str, torch.Tensor]:
        """The value head (and the separate critic if any), for saving beside the adapter."""
        state = {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()}
        if self.critic is not None:
            state |= {f"critic.{k}": v for k, v in self.critic.state_dict().items()}
        return state

    def save_value_head(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.value_state_dict().items()}, str(path))
        return path

    def load_value_head(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path))
        self.value_head.load_state_dict({k.removeprefix("value_head."): v for k, v in state.items() if k.startswith("value_head.")})
        if self.critic is not None:
            self.critic.load_state_dict({k.removeprefix("critic."): v for k, v in state.items() if k.startswith("critic.")})
