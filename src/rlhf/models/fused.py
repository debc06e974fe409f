"""Activations that transformers writes as several Python ops, swapped for torch's one-kernel version of the same formula.

GPT-2's `NewGELUActivation` is 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) in eight tensor ops, and autograd keeps
about as many (tokens, 4 x hidden) temporaries per layer for the backward pass. `F.gelu(approximate="tanh")` computes
the same function in one kernel and keeps only its input (transformers' own `GELUTanh`: "equivalent ... but not an
exact numerical match due to rounding errors"). docs/policy.md has the bench run.
"""

from __future__ import annotations

import torch


def fuse_activations(model: torch.nn.Module) -> int:
    """Replace every `NewGELUActivation` in `model` by transformers' `GELUTanh`, in place; returns how many."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
                swapped += 1
    return swapped
