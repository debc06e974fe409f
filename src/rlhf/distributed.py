"""The process seam: the one place that knows about ranks. Trainers reach other processes only through a `Runtime`.

`Runtime` is one process (a plain `python`/`rlhf` call): every method is the identity, so single-process
results are exactly what they were before multi-process training existed. `AccelerateRuntime` runs under
`accelerate launch` (DDP; FSDP and DeepSpeed through accelerate's config files), built on `accelerate.Accelerator`.
`make_runtime()` picks one from the environment the launcher sets (WORLD_SIZE).

The contract the trainers rely on:
- `shard(n)`: this process's contiguous slice of n global items (rank 0 first), so gathering the shards in
  rank order rebuilds the global batch in the single-process order.
- `backward(loss)`: `loss` is this process's share of the global objective; the gradients every process ends
  with are those of the SUM of all shares (DDP averages, so the share is scaled by the world size first).
- `gather`/`gather_object`/`mean`/`all`: global statistics (advantage whitening, reward normalisation, the KL
  the controller sees, eval accuracy) come from all processes' data, never one rank's.
- `is_main` guards every file write (metrics, TensorBoard, checkpoints, adapters, reports) and progress output.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch

log = logging.getLogger(__name__)


class Runtime:
    """One process: the identity everywhere."""

    is_main: bool = True
    """This process writes files and reports progress (rank 0)."""
    world_size: int = 1
    rank: int = 0

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """Wrap for data-parallel training (accelerate's `prepare`); identity in one process."""
        return model, optimizer

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def shard(self, n: int) -> slice:
        """This process's contiguous share of n global items (n must divide evenly over processes)."""
        if n % self.world_size:
            raise ValueError(f"{n} items do not split evenly over {self.world_size} processes")
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, value: float) -> float:
        """The mean of a per-process scalar over all processes (an all-reduce)."""
        return value

    def sum(self, value: float) -> float:
        return value

    def max(self, value: int) -> int:
        return value

    def all(self, flag: bool) -> bool:
        """True when `flag` holds in every process (e.g. every loss finite): all ranks take the same branch."""
        return flag

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's tensor along dim 0, in rank order (same shape in every process)."""
        return tensor

    def gather_object(self, items: list) -> list:
        """Concatenate every process's list, in rank order."""
        return items

    def gather_ragged(self, tensor: torch.Tensor) -> torch.Tensor:
        """`gather` for 1-D tensors whose length differs between processes."""
        return tensor

    def barrier(self) -> None:
        pass


class AccelerateRuntime(Runtime):
    """N processes under `accelerate launch`: torch.distributed through `accelerate.Accelerator` (gloo on CPU)."""

    def __init__(self, accelerator: Any = None):
        from accelerate import Accelerator

        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        kind = str(self.acc.distributed_type).rsplit(".", 1)[-1]
        if kind in ("FSDP", "DEEPSPEED") and self.acc.is_main_process:
            log.warning("%s is not verified with rlhf (only DDP is tested); sampling and evaluation run on the "
                        "unwrapped model and need its full parameters: see docs/scale.md", kind)
        self.is_main = self.acc.is_main_process
        self.world_size, self.rank = self.acc.num_processes, self.acc.process_index

    @property
    def device(self) -> torch.device:
        return self.acc.device

    def prepare(self, model, optimizer):
        return self.acc.prepare(model, optimizer)

    def unwrap(self, model):
        return self.acc.unwrap_model(model)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss * self.world_size)  # DDP averages gradients; our shares must add up

    def mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        return float(self.acc.reduce(t, "mean"))

    def sum(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        return float(self.acc.reduce(t, "sum"))

    def max(self, value: int) -> int:
        return int(self.gather(torch.tensor([int(value)], device=self.device)).max())

    def all(self, flag: bool) -> bool:
        return bool(self.gather(torch.tensor([bool(flag)], device=self.device)).all())

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.acc.gather(tensor.to(self.device).contiguous())

    def gather_object(self, items: list) -> list:
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def gather_ragged(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.gather_object(tensor.tolist()), dtype=tensor.dtype)

    def barrier(self) -> None:
        self.acc.wait_for_everyone()


def launched_world_size() -> int:
    """Processes the launcher started (accelerate launch / torchrun set WORLD_SIZE); 1 for a plain call."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_rank() -> int:
    """This process's global rank as the launcher set it (0 for a plain call); for CLI output before a Runtime exists."""
    return int(os.environ.get("RANK", "0") or 0)


def make_runtime() -> Runtime:
    """AccelerateRuntime under a multi-process launch, else the single-process Runtime."""
    return AccelerateRuntime() if launched_world_size() > 1 else Runtime()

