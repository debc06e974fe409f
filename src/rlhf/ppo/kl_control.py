"""The KL coefficient beta: fixed, or adapted towards a target KL (Ziegler et al. 2019, eq. 2).

Adaptive: e = clip(KL / KL_target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon),
where n_steps is the number of episodes in the batch. KL here is the per-sequence sum of k1.
"""

from __future__ import annotations

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
    """Episodes over which beta moves by up to +-20 %."""

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), int(state["horizon"])


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(init: float, adaptive: bool, target: float | None, horizon: int) -> KLController:
    if adaptive:
        if target is None or target <= 0:
            raise ValueError("adaptive KL control needs a positive target KL")
        return AdaptiveKLController(init, target, horizon)
    return FixedKLController(init)
