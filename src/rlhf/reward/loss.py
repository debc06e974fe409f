"""Pairwise reward-model loss (Bradley-Terry; Ouyang et al. 2022, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def preference_loss(
    r_chosen: torch.Tensor,  # (B,)
    r_rejected: torch.Tensor,  # (B,)
    margin: torch.Tensor | float = 0.0,  # (B,) or scalar
    weights: torch.Tensor | None = None,  # (B,) non-negative
    center_coef: float = 0.0,
    totals: tuple[float, int] | None = None,
) -> torch.Tensor:
    """Weighted mean of -log sigma(r_c - r_r - margin), plus center_coef * mean((r_c + r_r)^2).

    The margin asks the chosen reward to win by at least that much (Llama 2, Touvron et al. 2023);
    the centering term pins the reward's free offset near zero (Eisenstein et al. 2023).
    `totals` = (sum of weights, pairs) of the whole batch when these pairs are one process's share of it:
    the shares' losses then add up to the batch's loss.
    """
    per_pair = -F.logsigmoid(r_chosen - r_rejected - margin)  # (B,)
    w = weights if weights is not None else torch.ones_like(per_pair)
    if totals is not None:
        loss = (w * per_pair).sum() / max(totals[0], 1e-12)
    elif weights is None:
        loss = per_pair.mean()
    else:
        loss = (weights * per_pair).sum() / weights.sum().clamp(min=1e-12)
    if center_coef:
        sq = (r_chosen + r_rejected) ** 2  # (B,)
        loss = loss + center_coef * (sq.sum() / totals[1] if totals is not None else sq.mean())
    return loss
