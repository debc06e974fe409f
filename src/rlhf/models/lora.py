"""LoRA adapters via peft: wrap a causal LM, save/load the adapter in the standard peft format.

With LoRA the reference policy costs nothing: it is the same base model with the adapter disabled
(`PeftModel.disable_adapter()`), see `rlhf.models.reference`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    # peft 0.x still reads `is_gradient_checkpointing`, which transformers 5 deprecates: noise for users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = True
    """Train a LoRA adapter (true) or all the policy's weights (false)."""
    r: int = 16
    """Rank of the low-rank update."""
    alpha: float = 32.0
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter input; PPO keeps it 0 so old/new log-probs agree exactly."""
    target_modules: tuple[str, ...] = ("all-linear",)
    """Module names to adapt (e.g. q_proj,v_proj), or `all-linear` for every linear layer but the LM head."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError("lora.r must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("lora.dropout must be in [0, 1)")


def apply_lora(model: torch.nn.Module, cfg: LoraSettings) -> torch.nn.Module:
    """Wrap `model` in a peft LoRA `PeftModel`; only the adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if tuple(cfg.target_modules) == ("all-linear",) else list(cfg.target_modules)
    peft_cfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
        bias="none", task_type="CAUSAL_LM",
    )
    with _quiet_peft():
        peft_model = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA r=%d on %s: %d trainable of %d parameters", cfg.r, targets, trainable, total)
    return peft_model


def check_adapter(path: str | Path, cfg: LoraSettings) -> Path:
    """`path` if it holds a LoRA adapter with `cfg`'s rank, alpha, dropout (and explicit target modules);
    otherwise a ValueError naming the field, since training on would silently use the file's settings."""
    path = Path(path)
    file = path / "adapter_config.json"
    if not file.is_file():
        raise ValueError(f"{path}: not a peft adapter folder (no adapter_config.json)")
    saved = json.loads(file.read_text())
    want = {"r": cfg.r, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout}
    if tuple(cfg.target_modules) != ("all-linear",):
        want["target_modules"] = sorted(cfg.target_modules)
        saved["target_modules"] = sorted(saved.get("target_modules") or [])
    wrong = [f"{k} {saved.get(k)!r} (lora: {v!r})" for k, v in want.items() if saved.get(k) != v]
    if saved.get("peft_type", "LORA") != "LORA" or wrong:
        raise ValueError(f"{file}: the adapter does not match the `lora` settings: {', '.join(wrong) or saved.get('peft_type')}")
    return path


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_adapter(model: torch.nn.Module, path: str | Path, tokenizer=None) -> Path:
    """Write the adapter (adapter_config.json + adapter_model.safetensors), plus the tokenizer if given."""
    path = Path(path)
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def load_adapter(base: torch.nn.Module, path: str | Path, merge: bool = False, trainable: bool = False):
    """Attach a saved adapter to `base`; `merge=True` folds it into the weights (plain transformers model)."""
    from peft import PeftModel

    with _quiet_peft():
        model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    if merge:
        model = model.merge_and_unload()
    return model.eval()


@contextlib.contextmanager
def merged_for_sampling(model: torch.nn.Module) -> Iterator[None]:
    """Fold the active LoRA adapter into temporary copies of the base weights, adapter path off.

    Sampling then runs plain matmuls instead of three per adapted layer (decode is latency-bound on
    CPU). The original weight tensors are put back untouched afterwards, so unlike peft's
    merge/unmerge there is no rounding drift in the frozen reference. Costs one transient copy of
    the adapted weights. Plain LoRA on Linear/Conv1D only; anything else samples unmerged.
    """
    from peft.tuners.lora import Linear as LoraLinear

    if not is_peft(model):
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    if not layers or any(any(m.use_dora.get(a, False) for a in m.active_adapters) for m in layers):
        yield
        return
    saved: list[tuple[torch.nn.Module, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for m in layers:
                base = m.get_base_layer()
                delta = sum(m.get_delta_weight(a) for a in m.active_adapters if a in m.lora_A)
                saved.append((base, base.weight.data))
                base.weight.data = base.weight.data + delta
        with model.disable_adapter():
            yield
    finally:
        for base, weight in saved:
            base.weight.data = weight
