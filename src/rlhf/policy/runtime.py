"""The process seam: the one place multi-process training (accelerate) will plug into. Single-process today.

Every optimiser reaches other processes only through a `Runtime`: `prepare` wraps the model and optimizer
once, `backward` is the only backward call, `mean` turns a per-process statistic into the global one
(the KL that drives the controller and the stop rules), and `is_main` guards every file write
(metrics, checkpoints, adapter). Algorithms never test a rank themselves. Statistics computed inside a
batch stay per process: RLOO/GRPO groups never straddle processes (a prompt's k samples are drawn
together); PPO's advantage whitening and batch reward whitening would need a global mean/var here.
"""

from __future__ import annotations

import torch


class Runtime:
    is_main: bool = True
    """This process writes files (rank 0)."""
    world_size: int = 1

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """Wrap for data-parallel training (accelerate's `prepare`); identity in one process."""
        return model, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass (gradients averaged across processes under DDP)."""
        loss.backward()

    def mean(self, value: float) -> float:
        """The mean of a per-process scalar over all processes (an all-reduce)."""
        return value
