"""Resumable training state: weights, optimizer, scheduler and RNG, written atomically."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from rlhf.config import ConfigError


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters being trained (all of them, or LoRA adapters + head)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: dict, config_hash: str) -> None:
    atomic_torch_save(
        {
            "state": state,
            "config_hash": config_hash,
            "model": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        },
        folder / "state.pt",
    )


def load_checkpoint(folder: Path, model, optimizer, scheduler, config_hash: str) -> dict:
    """Restore everything saved by `save_checkpoint`; returns the loop state (step, early-stopping, ...)."""
    ckpt = torch.load(folder / "state.pt", weights_only=False)
    if ckpt["config_hash"] != config_hash:
        raise ConfigError(
            f"{folder}: checkpoint was written with a different config or data; use another out_dir or set resume=false"
        )
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if unexpected:
        raise ConfigError(f"{folder}: checkpoint does not match the model (unexpected keys {unexpected[:3]})")
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(ckpt["rng"]["python"])
    return ckpt["state"]
