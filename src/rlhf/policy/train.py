"""The one training loop for every policy optimiser: setup, exact resume, steps, stop rules, checkpoints,
metrics, and the saved peft adapter. `train_policy(cfg)` picks the algorithm from the config's class."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlhf.config import load_config, save_config
from rlhf.cpu import setup_cpu
from rlhf.data import read_pairs, read_prompts, resolve_prompts, write_json
from rlhf.distributed import Runtime, make_runtime
from rlhf.models.fused import fuse_activations
from rlhf.models.lora import apply_lora, check_adapter, is_peft, load_adapter, save_adapter
from rlhf.models.policy import CausalPolicy
from rlhf.models.registry import load_causal_lm
from rlhf.models.value_head import PolicyWithValueHead
from rlhf.policy.config import OnlineConfig, PolicyConfig
from rlhf.policy.dpo import DPOConfig, DPOTrainer
from rlhf.policy.grpo import GRPO, GRPOConfig
from rlhf.policy.metrics import MetricsLog
from rlhf.policy.online import OnlineTrainer
from rlhf.policy.ppo import PPO, PPOConfig
from rlhf.policy.rloo import RLOO, RLOOConfig
from rlhf.policy.state import load_checkpoint, save_checkpoint
from rlhf.reward.functions import RewardFunction, load_reward_function
from rlhf.types import PreferencePair, Prompt

log = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]

# Config class -> (name, online algorithm or None for DPO). The name is the CLI command and the saved YAML's stem.
ALGORITHMS: dict[type, tuple[str, Any]] = {PPOConfig: ("ppo", PPO), RLOOConfig: ("rloo", RLOO), GRPOConfig: ("grpo", GRPO),
                                           DPOConfig: ("dpo", None)}
CONFIGS: dict[str, type] = {name: cls for cls, (name, _) in ALGORITHMS.items()}


def algorithm_name(cfg: PolicyConfig) -> str:
    try:
        return ALGORITHMS[type(cfg)][0]
    except KeyError:
        raise TypeError(f"no policy optimiser for {type(cfg).__name__}; use one of {', '.join(c.__name__ for c in ALGORITHMS)}") from None


@dataclass
class PolicyResult:
    algorithm: str
    """ppo, dpo, rloo or grpo."""
    out_dir: Path
    steps: int
    """Steps completed in total (including steps before a resume)."""
    stop_reason: str
    """max_steps, reward_threshold, kl_budget or time_limit."""
    complete: bool
    """False when the run was cut by the clock (time_limit): its length depends on the machine, so it is
    not a finished result; re-running resumes it from the checkpoint."""
    history: list[dict[str, Any]]
    """One metrics record per step (as in metrics.jsonl)."""
    policy_dir: Path
    """out_dir/adapter (peft LoRA adapter + tokenizer) or out_dir/policy (full weights + tokenizer)."""
    metrics_path: Path
    config_path: Path
    model: CausalPolicy
    """The trained policy (PPO: with its value head), still in memory (adapter active)."""
    tokenizer: Any
    closing: dict[str, Any] = field(default_factory=dict)
    """Measurements after the last step (DPO: held-out implicit-reward metrics and the KL on sampled text)."""
    value_head_path: Path | None = None
    """PPO only: out_dir/value_head.safetensors."""

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def build_policy(cfg: PolicyConfig, model=None, tokenizer=None) -> tuple[CausalPolicy, Any]:
    """Load (or take) the causal LM, add LoRA when configured; PPO also gets a value head on its trunk."""
    if model is None:
        model, tokenizer = load_causal_lm(cfg.model)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    fuse_activations(model)
    if cfg.init_adapter and is_peft(model):
        raise ValueError("init_adapter: the model passed in already has an adapter; pass the plain base model")
    if cfg.lora.enabled and not is_peft(model):
        model = (load_adapter(model, check_adapter(cfg.init_adapter, cfg.lora), trainable=True) if cfg.init_adapter
                 else apply_lora(model, cfg.lora))
    elif not cfg.lora.enabled:
        model.requires_grad_(True)
    if isinstance(cfg, PPOConfig):
        return PolicyWithValueHead(model, separate_critic=cfg.separate_critic).eval(), tokenizer
    return CausalPolicy(model).eval(), tokenizer


def build_trainer(cfg: PolicyConfig, policy: CausalPolicy, tok, reward_fn: RewardFunction | None,
                  prompts: Sequence[Prompt] | None, pairs: Sequence[PreferencePair] | None, runtime: Runtime):
    """The algorithm's trainer over its data: pairs for DPO, prompts + a reward for the online optimisers."""
    if isinstance(cfg, DPOConfig):
        return DPOTrainer(cfg, policy, tok, pairs if pairs is not None else read_pairs(cfg.pairs), runtime)
    assert isinstance(cfg, OnlineConfig)
    reward_fn = reward_fn if reward_fn is not None else load_reward_function(cfg.reward)
    if prompts is None:
        prompts = read_prompts(resolve_prompts(cfg.prompts), split=cfg.split)
    if cfg.limit is not None:
        prompts = list(prompts)[: cfg.limit]
    return OnlineTrainer(cfg, ALGORITHMS[type(cfg)][1](cfg), policy, tok, prompts, reward_fn, runtime)


def stop_reason(cfg: PolicyConfig, metrics: dict[str, Any], elapsed_s: float = 0.0) -> str | None:
    if cfg.time_limit_min is not None and elapsed_s >= cfg.time_limit_min * 60:
        return "time_limit"
    if getattr(cfg, "reward_threshold", None) is not None and metrics["reward/raw_mean"] >= cfg.reward_threshold:
        return "reward_threshold"
    if getattr(cfg, "kl_budget", None) is not None and metrics["kl/mean"] > cfg.kl_budget:
        return "kl_budget"
    return None


def train_policy(
    cfg: PolicyConfig,
    reward_fn: RewardFunction | None = None,
    *,
    model=None,
    tokenizer=None,
    prompts: Sequence[Prompt] | None = None,
    pairs: Sequence[PreferencePair] | None = None,
    on_step: StepCallback | None = None,
    runtime: Runtime | None = None,
) -> PolicyResult:
    """Align a policy with the optimiser `cfg` configures (PPOConfig, RLOOConfig, GRPOConfig or DPOConfig).

    Online optimisers train against `reward_fn` (default: built from `cfg.reward`) on `prompts` (default:
    `cfg.prompts`); DPO trains on `pairs` (default: read from `cfg.pairs`). `model`/`tokenizer` override
    `cfg.model` (a model already wrapped by peft is used as is). `on_step(metrics)` runs after every step;
    its dict also carries `steps_total`. Resumes from `out_dir/checkpoint.pt` when `cfg.resume` and it exists.
    Under `accelerate launch` with N processes (`runtime` defaults to `make_runtime()`), every process trains
    on its share and only rank 0 writes files and calls `on_step`.
    """
    name, rt = algorithm_name(cfg), runtime or make_runtime()
    setup_cpu(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / f"{name}.yaml"
    if rt.is_main:
        save_config(cfg, config_path)
    policy, tok = build_policy(cfg, model, tokenizer)
    trainer = build_trainer(cfg, policy, tok, reward_fn, prompts, pairs, rt)

    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.exists():
        load_checkpoint(trainer, cfg, ckpt)
        log.info("resumed from %s at step %d", ckpt, trainer.step_count)
    metrics = MetricsLog(out, trainer.step_count, cfg.tensorboard) if rt.is_main else None
    history: list[dict[str, Any]] = []
    reason, t0 = "max_steps", time.perf_counter()
    try:
        while trainer.step_count < trainer.total_steps:
            m = trainer.step()
            if metrics is not None:
                metrics.log(m)
                if cfg.checkpoint_every and trainer.step_count % cfg.checkpoint_every == 0:
                    save_checkpoint(trainer, cfg, ckpt)
            if on_step is not None and rt.is_main:
                on_step(m | {"steps_total": trainer.total_steps})
            if (r := stop_reason(cfg, m, rt.mean(time.perf_counter() - t0))) is not None:  # every process agrees
                reason = r
                log.info("step %d: stopping (%s)", trainer.step_count, r)
                break
        if metrics is not None:
            save_checkpoint(trainer, cfg, ckpt)
            history = list(metrics.history)
    finally:
        if metrics is not None:
            metrics.close()
    closing = trainer.finish()

    policy_dir = out / ("adapter" if is_peft(policy.policy) else "policy")
    value_path = out / "value_head.safetensors" if isinstance(policy, PolicyWithValueHead) else None
    if rt.is_main:
        if is_peft(policy.policy):
            save_adapter(policy.policy, policy_dir, tok)
        else:
            policy.lm.save_pretrained(policy_dir)
            tok.save_pretrained(policy_dir)
        if value_path is not None:
            policy.save_value_head(value_path)
        final = history[-1] if history else {}
        write_json(out / "result.json", {
            "algorithm": name, "steps": trainer.step_count, "stop_reason": reason, "complete": reason != "time_limit",
            "policy_dir": str(policy_dir), "final": _finite(final), "closing": _finite(closing),
        })
    rt.barrier()  # the saved policy is there when any process returns
    return PolicyResult(
        name, out, trainer.step_count, reason, reason != "time_limit", history, policy_dir, out / "metrics.jsonl",
        config_path, policy, tok, closing, value_path,
    )


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


def train_ppo(cfg: PPOConfig, reward_fn: RewardFunction | None = None, **kw: Any) -> PolicyResult:
    """`train_policy` for a PPOConfig (the historical entry point)."""
    if not isinstance(cfg, PPOConfig):
        raise TypeError(f"train_ppo needs a PPOConfig, got {type(cfg).__name__}; use train_policy")
    return train_policy(cfg, reward_fn, **kw)


def load_policy(out_dir: str | Path, base_model: str | Path | None = None, merge: bool = True):
    """(model, tokenizer) of a policy saved by `train_policy`: base + adapter (merged by default), or full weights.

    `base_model` overrides the `model` recorded in out_dir/<algorithm>.yaml (needed when a model object was passed in).
    """
    out = Path(out_dir)
    if (out / "policy").is_dir():
        return load_causal_lm(out / "policy")
    if base_model is None:
        found = [(n, out / f"{n}.yaml") for n in CONFIGS if (out / f"{n}.yaml").exists()]
        if not found:
            raise FileNotFoundError(f"{out}: no policy/ folder and no {'/'.join(f'{n}.yaml' for n in CONFIGS)} naming the base model")
        base_model = load_config(CONFIGS[found[0][0]], found[0][1]).model
    base, tok = load_causal_lm(base_model)
    return load_adapter(base, out / "adapter", merge=merge), tok
