"""DPO (Rafailov et al. 2023) on preference pairs, with the IPO (Azar et al. 2023) and conservative
(label-smoothing) variants: no reward model, no rollouts. The reference is the same base with the LoRA
adapter off. One step: B pairs -> chosen + rejected rows in one forward -> sequence log-probs under the
policy and the reference -> weighted DPO loss -> AdamW. Held-out pairs (split by prompt) give the
implicit-reward accuracy and margins; the run closes with the KL to the reference on sampled text."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from rlhf.config import ConfigError
from rlhf.data import DataError
from rlhf.generation import encode_prompts
from rlhf.models.policy import CausalPolicy
from rlhf.models.reference import ReferencePolicy
from rlhf.policy.config import PolicyConfig
from rlhf.policy.core import evaluate_policy
from rlhf.policy.losses import DPOLossType, dpo_losses, implicit_rewards, sequence_logprobs
from rlhf.policy.runtime import Runtime
from rlhf.policy.state import load_trainable, make_optimizer, restore_rng, rng_state, trainable_state
from rlhf.types import PreferencePair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPOConfig(PolicyConfig):
    out_dir: str = "runs/dpo"
    """Output folder: adapter/ (or policy/), metrics.jsonl, tb/, dpo.yaml, checkpoint.pt, result.json."""
    pairs: str = "runs/feedback/pairs.jsonl"
    """Preference pairs: prompt / chosen / rejected and an optional weight (what `rlhf feedback export` writes)."""
    eval_fraction: float = 0.15
    """Share of prompts held out (all pairs of a prompt on one side) for implicit-reward accuracy and margins."""
    loss_type: DPOLossType = "sigmoid"
    """sigmoid: DPO's -log sigma(beta h); ipo: (h - 1 / (2 beta))^2 on per-token mean log-probs (Azar et al. 2023)."""
    beta: float = 0.1
    """DPO's beta (IPO's tau): how far the policy may move from the reference; the implicit reward's scale."""
    label_smoothing: float = 0.0
    """Conservative DPO: the probability a label is flipped (0 = plain DPO); sigmoid loss only."""
    lr: float = 2e-4
    """AdamW learning rate (constant)."""
    batch_size: int = 16
    """Pairs per optimizer step (split into grad_accum_steps micro-batches)."""
    epochs: float = 1.0
    """Passes over the training pairs; sets the number of steps unless max_steps is given. One pass of B pairs per
    step costs about what a PPO step of B episodes does in training (2B rows forward + backward, 2B forward)."""
    max_steps: int | None = None
    """Stop after this many steps (null = epochs x training pairs / batch_size)."""
    max_response_tokens: int = 64
    """Responses (with their closing EOS) longer than this keep their first tokens."""
    eval_every: int = 10
    """Evaluate on the held-out pairs every N steps (and at the end); 0 = only at the end."""
    eval_batch_size: int = 32
    """Pairs per no-grad forward in evaluation, and prompts per batch for the closing KL samples."""
    kl_prompts: int = 32
    """Held-out prompts (train prompts if none are held out) sampled at the end to measure the KL to the reference."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError("beta must be > 0")
        if self.init_adapter is not None:
            # DPO's implicit reward is log pi/pi_ref (Rafailov et al. 2023, eq. 5) with pi_ref the policy it starts
            # from; here pi_ref would be the base with the adapter off, not the starting adapter.
            raise ValueError("init_adapter: DPO's reference must be the policy it starts from, and here it would be "
                             "the base; merge the adapter into a model folder (rlhf sft --set merge=true) and pass "
                             "that folder as `model` instead")
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError(f"loss_type must be sigmoid or ipo, not {self.loss_type!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be in [0, 0.5)")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing applies to the sigmoid loss only")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.batch_size < 1 or self.batch_size % self.grad_accum_steps:
            raise ValueError("batch_size must be a positive multiple of grad_accum_steps")
        if self.epochs <= 0 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("epochs must be > 0 and max_steps >= 1")


@dataclass
class PairBatch:
    """B pairs as 2B rows, chosen rows first: prompts left-padded to P, responses right-padded to T."""

    sequences: torch.Tensor  # (2B, P+T) long
    attention_mask: torch.Tensor  # (2B, P+T) long
    response_mask: torch.Tensor  # (2B, T) float
    weights: torch.Tensor  # (B,) pair weights from the export
    prompt_len: int  # P

    @property
    def responses(self) -> torch.Tensor:  # (2B, T)
        return self.sequences[:, self.prompt_len :]


def encode_pairs(tokenizer, pairs: Sequence[PreferencePair], max_prompt_tokens: int, max_response_tokens: int,
                 system: str | None = None) -> PairBatch:
    """Chat-formatted prompt + response + EOS, laid out like a rollout so the same forward scores both."""
    prompts = [p.prompt for p in pairs] * 2
    ids, attn = encode_prompts(tokenizer, prompts, max_prompt_tokens, system)  # (2B, P)
    texts = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    resp = [(r + [tokenizer.eos_token_id])[:max_response_tokens]
            for r in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    T = max(len(r) for r in resp)
    resp_ids = torch.full((len(resp), T), tokenizer.pad_token_id, dtype=torch.long)  # (2B, T)
    resp_mask = torch.zeros(len(resp), T)  # (2B, T)
    for i, r in enumerate(resp):
        resp_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        resp_mask[i, : len(r)] = 1.0
    return PairBatch(
        torch.cat([ids, resp_ids], 1), torch.cat([attn.long(), resp_mask.long()], 1), resp_mask,
        torch.tensor([p.weight for p in pairs], dtype=torch.float32), ids.shape[1],
    )


def split_train_eval(pairs: Sequence[PreferencePair], fraction: float, seed: int) -> tuple[list, list]:
    """Drop pairs without a preference, then hold out `fraction` of the prompts (grouped by prompt)."""
    from rlhf.reward.train import split_pairs

    kept = [p for p in pairs if p.chosen != p.rejected]
    if len(kept) < len(pairs):
        log.warning("dropped %d pairs whose chosen equals rejected", len(pairs) - len(kept))
    if not kept:
        raise DataError("no preference pairs with chosen != rejected: there is no preference to learn")
    return split_pairs(kept, fraction, seed)


class DPOTrainer:
    name = "dpo"

    def __init__(self, cfg: DPOConfig, model: CausalPolicy, tokenizer, pairs: Sequence[PreferencePair],
                 runtime: Runtime | None = None):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.train, self.held_out = split_train_eval(pairs, cfg.eval_fraction, cfg.seed)
        self.runtime = rt = runtime or Runtime()
        if cfg.batch_size % rt.world_size or (cfg.batch_size // rt.world_size) % cfg.grad_accum_steps:
            raise ValueError(f"{rt.world_size} processes x {cfg.grad_accum_steps} micro-batches must divide batch_size ({cfg.batch_size})")
        model.eval()  # no dropout: at step 0 the policy's log-probs equal the reference's exactly
        self.reference = ReferencePolicy(model.policy)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer([{"params": self.params, "lr": cfg.lr}], cfg.weight_decay)
        # `train_model` (DDP-wrapped under N processes) for the policy forward; `model` everywhere else.
        self.train_model, self.optimizer = self.runtime.prepare(self.model, self.optimizer)
        self.step_count = 0
        self.data_pos = 0  # pairs consumed; a fresh seeded permutation per pass
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(self.train) / cfg.batch_size))
        log.info("DPO: %d training pairs, %d held out, %d steps", len(self.train), len(self.held_out), self.total_steps)

    def next_pairs(self, n: int) -> list[PreferencePair]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.data_pos, len(self.train))
            perm = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch))
            out.append(self.train[int(perm[i])])
            self.data_pos += 1
        return out

    def logps(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(2B,) sequence log-probs under the policy (with grad when enabled) and the reference (adapter off)."""
        out = self.train_model(batch.sequences, batch.attention_mask, batch.prompt_len)
        average = self.cfg.loss_type == "ipo"
        policy = sequence_logprobs(out.logprobs, batch.response_mask, average)
        ref_tok = self.reference.logprobs(batch.sequences, batch.attention_mask, batch.prompt_len)
        return policy, sequence_logprobs(ref_tok, batch.response_mask, average)

    def pair_losses(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B,) per-pair losses and the (B,) log-probs and implicit rewards behind them."""
        cfg, n = self.cfg, batch.weights.numel()
        policy, ref = self.logps(batch)
        pc, pr, rc, rr = policy[:n], policy[n:], ref[:n], ref[n:]
        losses = dpo_losses(pc, pr, rc, rr, cfg.beta, cfg.loss_type, cfg.label_smoothing)
        return losses, {
            "logps_chosen": pc.detach(), "logps_rejected": pr.detach(),
            "rewards_chosen": implicit_rewards(pc, rc, cfg.beta), "rewards_rejected": implicit_rewards(pr, rr, cfg.beta),
        }

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        cfg, rt, t0 = self.cfg, self.runtime, time.perf_counter()
        # 1. The next B pairs (the same in every process), their weights; this process's contiguous share.
        pairs = self.next_pairs(cfg.batch_size)
        total_w = sum(p.weight for p in pairs)
        mine = pairs[rt.shard(len(pairs))]
        # 2. Forward + weighted loss + backward per micro-batch (chosen and rejected rows in one forward).
        self.optimizer.zero_grad(set_to_none=True)
        micro, parts, finite, loss_sum = cfg.batch_size // cfg.grad_accum_steps, [], True, 0.0
        for start in range(0, len(mine), micro):
            batch = encode_pairs(self.tokenizer, mine[start : start + micro], cfg.max_prompt_tokens,
                                 cfg.max_response_tokens, cfg.system_prompt)
            losses, stats = self.pair_losses(batch)
            loss = (batch.weights * losses).sum() / max(total_w, 1e-12)  # this micro-batch's share of the weighted mean
            if not rt.all(bool(torch.isfinite(loss))):
                finite = False
                break
            rt.backward(loss)
            loss_sum += loss.item()
            parts.append(stats | {"weights": batch.weights})
        loss_sum = rt.sum(loss_sum)
        # 3. Clip, non-finite guard, update.
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm) if finite else torch.tensor(float("nan"))
        if finite and torch.isfinite(norm):
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("step %d: non-finite loss or gradient; update skipped", self.step_count + 1)
        self.step_count += 1
        # 4. Metrics (from the forward before the update).
        m: dict[str, Any] = {"step": self.step_count, "epoch": self.data_pos / len(self.train),
                             "pairs": self.data_pos, "loss": loss_sum if finite else float("nan")}
        if parts:
            cat = {k: rt.gather(torch.cat([p[k] for p in parts])) for k in parts[0]}  # the whole batch's pairs
            m |= pair_summary(cat["rewards_chosen"], cat["rewards_rejected"], "rewards")
            m |= {"logps/chosen": float(cat["logps_chosen"].mean()), "logps/rejected": float(cat["logps_rejected"].mean())}
        m |= {"grad_norm": float(norm), "nonfinite/skipped_updates": int(not (finite and torch.isfinite(norm))),
              "lr": self.optimizer.param_groups[0]["lr"]}
        if self.held_out and cfg.eval_every and self.step_count % cfg.eval_every == 0 and self.step_count < self.total_steps:
            m |= self.evaluate()
        dt = time.perf_counter() - t0
        return m | {"pairs_per_s": len(pairs) / dt, "time/step": dt}  # every process: the same held-out metrics

    @torch.no_grad()
    def evaluate(self, pairs: Sequence[PreferencePair] | None = None) -> dict[str, float]:
        """Held-out implicit-reward accuracy (ties count half), margin, weighted loss and log-probs."""
        pairs = self.held_out if pairs is None else pairs
        cfg, losses, stats = self.cfg, [], []
        for start in range(0, len(pairs), cfg.eval_batch_size):
            batch = encode_pairs(self.tokenizer, pairs[start : start + cfg.eval_batch_size], cfg.max_prompt_tokens,
                                 cfg.max_response_tokens, cfg.system_prompt)
            l, s = self.pair_losses(batch)
            losses.append(l)
            stats.append(s | {"weights": batch.weights})
        cat = {k: torch.cat([s[k] for s in stats]) for k in stats[0]}
        w = cat["weights"]
        return pair_summary(cat["rewards_chosen"], cat["rewards_rejected"], "eval") | {
            "eval/loss": float((w * torch.cat(losses)).sum() / w.sum().clamp(min=1e-12)),
            "eval/logps_chosen": float(cat["logps_chosen"].mean()),
            "eval/logps_rejected": float(cat["logps_rejected"].mean()),
            "eval/pairs": len(pairs),
        }

    def finish(self) -> dict[str, Any]:
        """Held-out metrics of the final policy, and its KL to the reference on text it samples itself."""
        cfg = self.cfg
        source = self.held_out or self.train
        prompts = list(dict.fromkeys(p.prompt for p in source))[: cfg.kl_prompts]
        sampled = evaluate_policy(
            self.model, self.tokenizer, prompts, None, cfg.sampling, batch_size=cfg.eval_batch_size, seed=cfg.seed,
            max_prompt_tokens=cfg.max_prompt_tokens, system_prompt=cfg.system_prompt, reference=self.reference,
        )
        out = self.evaluate() if self.held_out else {}
        return out | {"kl/mean": sampled.kl, "kl/prompts": len(prompts), "kl/prompts_from": "eval" if self.held_out else "train",
                      "response/length_mean": sampled.mean_length}

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "data_pos": self.data_pos, "trainable": trainable_state(self.model),
                "optimizer": self.optimizer.state_dict(), "rng": rng_state({}), "world_size": self.runtime.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (saved := int(state.get("world_size", 1))) != self.runtime.world_size:
            raise ConfigError(
                f"the checkpoint was written by {saved} process(es) and this run has {self.runtime.world_size}: "
                f"resume with {saved}, or use another out_dir / resume=false to start over")
        load_trainable(self.model, state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], {})
        self.step_count, self.data_pos = int(state["step"]), int(state["data_pos"])


def pair_summary(r_chosen: torch.Tensor, r_rejected: torch.Tensor, prefix: str) -> dict[str, float]:
    """Implicit-reward accuracy (ties count half: 0.5 at step 0), mean margin and mean rewards of (B,) pairs."""
    d = (r_chosen - r_rejected).double()
    return {
        f"{prefix}/accuracy": float(((d > 0).double() + 0.5 * (d == 0).double()).mean()),
        f"{prefix}/margin": float(d.mean()),
        f"{prefix}/chosen": float(r_chosen.mean()),
        f"{prefix}/rejected": float(r_rejected.mean()),
    }
