"""The KL coefficient beta: fixed, or adapted towards a target KL (Ziegler et al. 2019, eq. 2).

Adaptive: e = clip(KL / KL_target - 1, -0.2, 0.2);  beta <- beta * exp(e * n_steps / horizon),
clamped to [min_value, max_value]. n_steps is the number of episodes in the batch; KL is the
per-sequence sum of k1. Ziegler's update is beta * (1 + e n / H): exp(x) is the same to first order,
but stays positive when n / H is large (1 + x reaches 0 at n / H = 5 with e = -0.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class FixedKLController:
    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    value: float
    """Current beta."""
    target: float
    """Target KL per sequence (nats)."""
    horizon: int
    """Episodes over which beta moves by up to a factor exp(+-0.2)."""
    min_value: float = 1e-3
    """beta never goes below this: a vanishing penalty lets KL run away before the controller can react."""
    max_value: float = 10.0
    """beta never goes above this."""

    def __post_init__(self) -> None:
        if not 0 < self.min_value <= self.value <= self.max_value:
            raise ValueError(f"KL coefficient {self.value} must lie in [{self.min_value}, {self.max_value}] and be > 0")
        if self.horizon < 1 or self.target <= 0:
            raise ValueError("adaptive KL control needs horizon >= 1 and a positive target")

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value = min(max(self.value * math.exp(error * n_steps / self.horizon), self.min_value), self.max_value)
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), int(state["horizon"])


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(
    init: float, adaptive: bool, target: float | None, horizon: int, bounds: tuple[float, float] = (1e-3, 10.0)
) -> KLController:
    if adaptive:
        if target is None or target <= 0:
            raise ValueError("adaptive KL control needs a positive target KL")
        return AdaptiveKLController(init, target, horizon, *bounds)
    return FixedKLController(init)
