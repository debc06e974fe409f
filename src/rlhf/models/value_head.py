"""Policy + value head sharing one trunk: one forward pass gives response logits and values.

The trunk's last hidden states at positions P-1 .. P+T-2 predict response tokens 0 .. T-1; the LM
head and the value head both read exactly those rows, so prompt positions never go through the
(large) LM head. A separate critic (its own trunk copy) is an option; it costs a second forward.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlhf.generation import position_ids_from_mask


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def response_hidden(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Trunk hidden states that predict each response token: (B, P+T) ids -> (B, T, H)."""
    trunk = unwrap(lm).get_decoder()
    out = trunk(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state[:, prompt_len - 1 : -1]  # (B, T, H)


def response_logits(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, T, V) through the model's own LM head."""
    return unwrap(lm).get_output_embeddings()(hidden)


@dataclass
class PolicyOutput:
    logits: torch.Tensor  # (B, T, V) next-token logits for each response position
    values: torch.Tensor | None  # (B, T) V(s_t): value of the state before response token t


class PolicyWithValueHead(nn.Module):
    """A causal LM (optionally peft-wrapped) plus a scalar value head on its trunk."""

    def __init__(self, policy: nn.Module, separate_critic: bool = False):
        super().__init__()
        self.policy = policy
        hidden = unwrap(policy).config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        # Zero init: V = 0 at the start, so early advantages are just the (shaped) returns.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.critic: nn.Module | None = None
        if separate_critic:
            trunk = unwrap(policy).get_decoder()
            self.critic = copy.deepcopy(trunk).requires_grad_(True)  # trained in full, even with LoRA

    @property
    def lm(self) -> nn.Module:
        """The transformers causal LM (adapter layers injected when LoRA is on); used for sampling."""
        return unwrap(self.policy)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, with_values: bool = True
    ) -> PolicyOutput:
        h = response_hidden(self.policy, input_ids, attention_mask, prompt_len)  # (B, T, H)
        logits = response_logits(self.policy, h)  # (B, T, V)
        if not with_values:
            return PolicyOutput(logits, None)
        if self.critic is not None:
            ch = self.critic(
                input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False,
            ).last_hidden_state[:, prompt_len - 1 : -1]
        else:
            ch = h
        values = self.value_head(ch).squeeze(-1).float()  # (B, T)
        return PolicyOutput(logits, values)

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
