"""Activations that transformers writes as several Python ops, swapped for torch's one-kernel version of the same formula.

GPT-2's `NewGELUActivation` is 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) in eight tensor ops, and autograd keeps
about as many (tokens, 4 x hidden) temporaries per layer for the backward pass. `F.gelu(approximate="tanh")` computes
the same function in one kernel and keeps only its input (transformers' own `GELUTanh`: "equivalent ... but not an
exact numerical match due to rounding errors"). docs/policy.md has the bench run.

`recompute_activations` lets autograd keep an activation's input instead of its output, recomputing the output in the
backward pass: a LoRA layer after the activation would otherwise keep that (tokens, 4 x hidden) output for its A gradient.

`head_logprobs` takes response log-probs (and entropy) through a frozen LM head without keeping the (tokens, vocab)
logits for the backward pass: at SmolLM2's 49,152-token vocabulary those are the largest tensors of a step.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

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


class _Recompute:
    """A saved activation output, kept as the module and its input."""

    __slots__ = ("module", "input", "shape")

    def __init__(self, module: torch.nn.Module, inp: torch.Tensor, shape: torch.Size):
        self.module, self.input, self.shape = module, inp, shape

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            return self.module(self.input).view(self.shape)


def _activation_types() -> tuple[type, ...]:
    """Elementwise activation modules: every class transformers' `ACT2FN` builds, and torch's SiLU and GELU."""
    from transformers.activations import ACT2CLS

    kinds = {c[0] if isinstance(c, tuple) else c for c in ACT2CLS.values()}
    return tuple(kinds | {torch.nn.SiLU, torch.nn.GELU})


@contextlib.contextmanager
def recompute_activations(model: torch.nn.Module) -> Iterator[None]:
    """Inside: a tensor that autograd saves and that is the whole output of one of `model`'s activation modules
    (SiLU, GELU, ...) is saved as the module's input, and the output is recomputed from it when the backward pass needs it.

    Under LoRA, the adapter's A matrix needs its layer's input for its gradient, so a down-projection after the
    activation keeps that (tokens, 4 x hidden) output alive until backward, though the activation's own backward keeps
    its input anyway. Recomputing costs one elementwise op per layer and gives the same gradients, bit for bit
    (the same kernel on the same input); at the GPT-2-124M shape it frees 101 of 418 MB of saved activations a
    forward (docs/policy.md). Frozen layers (no LoRA) save no input for their weights, so there it changes nothing.
    """
    # storage address -> (weak ref to the output, module, input); weak, so an output lives no longer than it would
    outputs: dict[int, tuple[weakref.ref, torch.nn.Module, torch.Tensor]] = {}

    def keep(module, args, out):
        if isinstance(out, torch.Tensor) and out.requires_grad and args and isinstance(args[0], torch.Tensor):
            outputs[out.untyped_storage().data_ptr()] = (weakref.ref(out), module, args[0])

    def pack(t: torch.Tensor):
        hit = outputs.get(t.untyped_storage().data_ptr())
        out = hit[0]() if hit is not None else None  # alive, so its storage was not reused
        # the output itself or a reshaped view of all of it (F.linear flattens (B, T, I) inputs)
        if (out is not None and t.storage_offset() == out.storage_offset() and t.numel() == out.numel()
                and t.is_contiguous() and out.is_contiguous()):
            return _Recompute(hit[1], hit[2], t.shape)
        return t

    def unpack(saved):
        return saved() if isinstance(saved, _Recompute) else saved

    kinds = _activation_types()
    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        for h in handles:
            h.remove()
        outputs.clear()  # strong references only while the forward runs


class _HeadLogprobs(torch.autograd.Function):
    """log pi(token) (and the entropy) through a frozen LM head, a few rows at a time, never holding (N, V).

    lp_i and H_i depend on row i alone, so their gradients w.r.t. the hidden state h_i are known in the forward pass:
    d lp_i / d h_i = (onehot_i - p_i) W / tau and d H_i / d h_i = -(p_i * (z_i - E_p[z])) W / tau. Saving these two
    (N, H) rows instead of the (N, V) logits (and their softmax) is what cuts the memory; the backward is two
    row-scalings, with no second pass through the head.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature, with_entropy, grad, rows):
        lp, ent, d_lp, d_ent = [], [], [], []
        for s in range(0, hidden.size(0), rows):
            h, tok = hidden[s : s + rows], tokens[s : s + rows]
            z = torch.nn.functional.linear(h, weight, bias).float()  # (c, V)
            if temperature != 1.0:
                z = z / temperature
            lse = torch.logsumexp(z, -1, keepdim=True)  # (c, 1)
            lp.append((z.gather(-1, tok[:, None]) - lse).squeeze(-1))
            if not (with_entropy or grad):
                continue
            p = (z - lse).exp_()  # (c, V)
            mean_z = (p * z).sum(-1, keepdim=True)  # (c, 1): E_p[z]
            if with_entropy:
                ent.append((lse - mean_z).squeeze(-1))
            if grad:
                g = -p
                g.scatter_add_(-1, tok[:, None], torch.ones_like(lse))  # onehot - p
                d_lp.append(g.to(weight.dtype) @ weight / temperature)  # (c, H)
                if with_entropy:
                    d_ent.append((p.mul_(z - mean_z).neg_()).to(weight.dtype) @ weight / temperature)
        if grad:
            ctx.save_for_backward(torch.cat(d_lp), torch.cat(d_ent) if with_entropy else None)
        return torch.cat(lp), torch.cat(ent) if with_entropy else None

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        d_lp, d_ent = ctx.saved_tensors
        grad = g_lp[:, None].to(d_lp.dtype) * d_lp
        if d_ent is not None and g_ent is not None:
            grad = grad + g_ent[:, None].to(d_ent.dtype) * d_ent
        return grad, None, None, None, None, None, None, None


def head_logprobs(
    hidden: torch.Tensor, head: torch.nn.Linear, tokens: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
    rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T, H) hidden states, a frozen (V, H) LM head, (B, T) ids -> (B, T) log-probs and (B, T) entropy (or None).

    Same numbers as `logprobs_and_entropy(head(hidden), tokens, temperature)`; rows of the logits are made ~8 M
    entries at a time (or `rows` rows). The head's weight must be frozen (LoRA leaves it so): its gradient is not computed.
    """
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        raise ValueError("head_logprobs needs a frozen LM head; use the logits path when the head is trained")
    B, T, H = hidden.shape
    rows = rows or max(1, (1 << 23) // head.weight.size(0))
    lp, ent = _HeadLogprobs.apply(hidden.reshape(B * T, H), head.weight, head.bias, tokens.reshape(B * T),
                                  float(temperature), with_entropy, torch.is_grad_enabled() and hidden.requires_grad, rows)
    return lp.view(B, T), ent.view(B, T) if ent is not None else None
