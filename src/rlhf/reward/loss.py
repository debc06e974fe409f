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
) -> torch.Tensor:
    """Weighted mean of -log sigma(r_c - r_r - margin), plus center_coef * mean((r_c + r_r)^2).

    The margin asks the chosen reward to win by at least that much (Llama 2, Touvron et al. 2023);
    the centering term pins the reward's free offset near zero (Eisenstein et al. 2023).
    """
    per_pair = -F.logsigmoid(r_chosen - r_rejected - margin)  # (B,)
    if weights is None:
        loss = per_pair.mean()
    else:
        loss = (weights * per_pair).sum() / weights.sum().clamp(min=1e-12)
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss
