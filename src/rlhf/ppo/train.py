"""`train_ppo`: the PPO loop with stopping rules, checkpoints, exact resume and the saved outputs."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlhf.config import ConfigError, load_config, save_config, to_dict
from rlhf.data import atomic_write, read_prompts, resolve_prompts, write_json
from rlhf.models.lora import apply_lora, is_peft, load_adapter, save_adapter
from rlhf.models.registry import load_causal_lm
from rlhf.models.value_head import PolicyWithValueHead
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.metrics import MetricsLog
from rlhf.ppo.trainer import PPOTrainer
from rlhf.reward.functions import RewardFunction, load_reward_function
from rlhf.types import Prompt

log = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]


@dataclass
class PPOResult:
    out_dir: Path
    steps: int
    """PPO steps completed in total (including steps before a resume)."""
    stop_reason: str
    """max_steps, reward_threshold, kl_budget or time_limit."""
    complete: bool
    """False when the run was cut by the clock (time_limit): its length depends on the machine, so it is
    not a finished result; re-running resumes it from the checkpoint."""
    history: list[dict[str, Any]]
    """One metrics record per step (as in metrics.jsonl)."""
    policy_dir: Path
    """out_dir/adapter (peft LoRA adapter + tokenizer) or out_dir/policy (full weights + tokenizer)."""
    value_head_path: Path
    metrics_path: Path
    config_path: Path
    model: PolicyWithValueHead
    """The trained policy + value head, still in memory (adapter active)."""
    tokenizer: Any

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def build_policy(cfg: PPOConfig, model=None, tokenizer=None) -> tuple[PolicyWithValueHead, Any]:
    """Load (or take) the causal LM, add LoRA when configured, and put a value head on its trunk."""
    if model is None:
        model, tokenizer = load_causal_lm(cfg.model)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    if cfg.lora.enabled and not is_peft(model):
        model = apply_lora(model, cfg.lora)
    elif not cfg.lora.enabled:
        model.requires_grad_(True)
    return PolicyWithValueHead(model, separate_critic=cfg.separate_critic).eval(), tokenizer


def stop_reason(cfg: PPOConfig, metrics: dict[str, Any], elapsed_s: float = 0.0) -> str | None:
    if cfg.time_limit_min is not None and elapsed_s >= cfg.time_limit_min * 60:
        return "time_limit"
    if cfg.reward_threshold is not None and metrics["reward/raw_mean"] >= cfg.reward_threshold:
        return "reward_threshold"
    if cfg.kl_budget is not None and metrics["kl/mean"] > cfg.kl_budget:
        return "kl_budget"
    return None


# Fields that may change between a run and its resume: they do not shape what the steps compute.
RESUME_SAFE = frozenset({
    "out_dir", "resume", "threads", "tensorboard", "checkpoint_every", "max_steps", "reward_threshold", "kl_budget",
    "time_limit_min", "forward_batch_size",
})


def resume_key(cfg: PPOConfig) -> dict[str, Any]:
    """The config fields a checkpoint is bound to."""
    return {k: v for k, v in to_dict(cfg).items() if k not in RESUME_SAFE}


def check_resumable(saved: dict[str, Any] | None, cfg: PPOConfig, ckpt: Path) -> None:
    """Refuse to resume a checkpoint written under settings that shape the results differently."""
    if saved is None:
        return
    now = resume_key(cfg)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ConfigError(
            f"{ckpt}: the checkpoint was written with different settings ({detail}); resuming would mix two runs. "
            "Use another out_dir, or set resume=false to start over."
        )


def save_checkpoint(trainer: PPOTrainer, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        torch.save(trainer.state_dict() | {"config": resume_key(trainer.cfg)}, fh)


def train_ppo(
    cfg: PPOConfig,
    reward_fn: RewardFunction | None = None,
    *,
    model=None,
    tokenizer=None,
    prompts: Sequence[Prompt] | None = None,
    on_step: StepCallback | None = None,
) -> PPOResult:
    """Align a policy with PPO against `reward_fn` (default: built from `cfg.reward`).

    `model`/`tokenizer` override `cfg.model` (a model already wrapped by peft is used as is);
    `prompts` overrides `cfg.prompts`. `on_step(metrics)` runs after every step (e.g. a progress bar).
    Resumes from `out_dir/checkpoint.pt` when `cfg.resume` and it exists.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = save_config(cfg, out / "ppo.yaml")
    reward_fn = reward_fn if reward_fn is not None else load_reward_function(cfg.reward)
    if prompts is None:
        prompts = read_prompts(resolve_prompts(cfg.prompts), split=cfg.split)
    if cfg.limit is not None:
        prompts = list(prompts)[: cfg.limit]
    policy, tok = build_policy(cfg, model, tokenizer)
    trainer = PPOTrainer(cfg, policy, tok, prompts, reward_fn)

    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        check_resumable(state.get("config"), cfg, ckpt)
        trainer.load_state_dict(state)
        log.info("resumed from %s at step %d", ckpt, trainer.step_count)
    metrics = MetricsLog(out, trainer.step_count, cfg.tensorboard)
    reason, t0 = "max_steps", time.perf_counter()
    try:
        while trainer.step_count < cfg.max_steps:
            m = trainer.step()
            metrics.log(m)
            if cfg.checkpoint_every and trainer.step_count % cfg.checkpoint_every == 0:
                save_checkpoint(trainer, ckpt)
            if on_step is not None:
                on_step(m)
            if (r := stop_reason(cfg, m, time.perf_counter() - t0)) is not None:
                reason = r
                log.info("step %d: stopping (%s)", trainer.step_count, r)
                break
        save_checkpoint(trainer, ckpt)
        history = list(metrics.history)
    finally:
        metrics.close()

    policy_dir = out / ("adapter" if is_peft(policy.policy) else "policy")
    if is_peft(policy.policy):
        save_adapter(policy.policy, policy_dir, tok)
    else:
        policy.lm.save_pretrained(policy_dir)
        tok.save_pretrained(policy_dir)
    value_path = policy.save_value_head(out / "value_head.safetensors")
    final = history[-1] if history else {}
    write_json(out / "result.json", {
        "steps": trainer.step_count, "stop_reason": reason, "complete": reason != "time_limit",
        "policy_dir": str(policy_dir),
        "final": {k: v for k, v in final.items() if not (isinstance(v, float) and not math.isfinite(v))},
    })
    return PPOResult(
        out, trainer.step_count, reason, reason != "time_limit", history, policy_dir, value_path, out / "metrics.jsonl",
        config_path, policy, tok,
    )


def load_ppo_policy(out_dir: str | Path, base_model: str | Path | None = None, merge: bool = True):
    """(model, tokenizer) of an aligned policy saved by `train_ppo`: base + adapter (merged by default), or full weights.

    `base_model` overrides the `model` recorded in out_dir/ppo.yaml (needed when a model object was passed in).
    """
    out = Path(out_dir)
    if (out / "policy").is_dir():
        return load_causal_lm(out / "policy")
    cfg = load_config(PPOConfig, out / "ppo.yaml")
    base, tok = load_causal_lm(base_model or cfg.model)
    return load_adapter(base, out / "adapter", merge=merge), tok
