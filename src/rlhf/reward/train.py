"""`train_reward_model`: fit r(prompt, response) so that r(chosen) > r(rejected), resumably.

Per step: a length-grouped batch of B pairs (or every pair of N prompts) -> one forward over its distinct responses
-> pairwise loss -> AdamW.
Every evaluation writes a checkpoint (weights, optimizer, scheduler, RNG, step = data position) and
keeps the weights with the best eval loss; the saved model is that best one.

Under `accelerate launch` (`rlhf.distributed`) each process takes its share of every batch (the losses of
the shares add up to the batch's loss; gradients are summed), evaluation scores are gathered from every
process so the metrics cover the whole eval set, and only rank 0 writes files and calls `on_step`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rlhf.config import save_config, to_dict
from rlhf.cpu import setup_cpu
from rlhf.data import DataError, JsonlAppender, read_pairs, write_json, write_jsonl
from rlhf.distributed import Runtime, make_runtime
from rlhf.reward.checkpoint import atomic_torch_save, load_checkpoint, save_checkpoint, trainable_state
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.data import EncodedPair, collate_pairs, length_grouped_batches, prompt_batches
from rlhf.reward.loss import preference_loss
from rlhf.reward.metrics import PairMetrics, pair_metrics
from rlhf.reward.model import STATS_FILE, RewardModel
from rlhf.types import PreferencePair

log = logging.getLogger(__name__)

# Fields that do not change the trained weights; a checkpoint may be resumed across them.
_RESUME_SAFE = (
    "resume", "threads", "tensorboard", "log_every", "save_every", "out_dir", "stats_pairs", "eval_batch_size",
)


@dataclass(frozen=True)
class StepInfo:
    """Passed to `on_step` after every optimizer step."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    accuracy: float
    lr: float
    eval: PairMetrics | None = None
    """Set on steps that ran an evaluation."""


@dataclass(frozen=True)
class RewardTrainResult:
    out_dir: Path
    """Folder holding the reward model; pass it to `load_reward_function`."""
    steps: int
    best_step: int
    """Step whose weights were saved (best eval loss; the last step without an eval split)."""
    total_steps: int
    train_pairs: int
    eval_pairs: int
    eval: PairMetrics | None
    """Validation metrics of the saved model (None without an eval split). The validation split chose the
    checkpoint, so its accuracy is optimistic; report `test`."""
    normalization: tuple[float, float]
    """(mean, std) of the saved model's rewards over the reference set."""
    stopped_early: bool
    resumed_from: int
    """Checkpoint step this run started from (0 = fresh)."""
    train_seconds: float
    pairs_per_s: float
    """Training throughput: pairs through forward + backward per second of training time."""

    test_pairs: int = 0
    test_prompts: int = 0
    test: PairMetrics | None = None
    """Metrics on the test split (never trained on, never used to choose a checkpoint); None without one."""
    test_accuracy_ci: tuple[float, float] | None = None
    """95% bootstrap CI of the test accuracy, resampling prompts (a prompt's pairs are not independent)."""
    model: RewardModel | None = None
    """The saved reward model, still in memory (every process holds the same weights)."""

    @property
    def eval_accuracy(self) -> float | None:
        return self.eval.accuracy if self.eval else None

    @property
    def test_accuracy(self) -> float | None:
        return self.test.accuracy if self.test else None


# ------------------------------------------------------------------------------------ data


def split_pairs(pairs: Sequence[PreferencePair], fraction: float, seed: int) -> tuple[list, list]:
    """Hold out `fraction` of the prompts (all pairs of a prompt land on one side); by pair if prompts are few."""
    if fraction <= 0:
        return list(pairs), []
    prompts = sorted({p.prompt for p in pairs})
    rng = random.Random(seed)
    if len(prompts) >= 10:
        rng.shuffle(prompts)
        held = set(prompts[: max(1, round(len(prompts) * fraction))])
        return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]
    order = list(range(len(pairs)))
    rng.shuffle(order)
    k = max(1, round(len(pairs) * fraction))
    held_idx = set(order[:k])
    return [p for i, p in enumerate(pairs) if i not in held_idx], [p for i, p in enumerate(pairs) if i in held_idx]


def hold_out_prompts(pairs: Sequence[PreferencePair], fraction: float, seed: int) -> tuple[list, list]:
    """(rest, held): `fraction` of the distinct prompts, with all their pairs, held out; at least one prompt each side."""
    prompts = sorted({p.prompt for p in pairs})
    if len(prompts) < 2:
        raise DataError(f"a test split by prompt needs at least 2 distinct prompts, got {len(prompts)}; set test_fraction=0")
    random.Random(seed).shuffle(prompts)
    k = min(len(prompts) - 1, max(1, round(len(prompts) * fraction)))
    held = set(prompts[:k])
    return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]


def score_pairs(rm: RewardModel, enc: Sequence[EncodedPair], batch_size: int, rt: Runtime | None = None):
    """(r_chosen, r_rejected) of every pair, in order; under N processes each scores every N-th pair."""
    if rt is None or rt.world_size == 1:
        return rm.score_pairs(enc, batch_size)
    idx = list(range(rt.rank, len(enc), rt.world_size))
    rc, rr = rm.score_pairs([enc[i] for i in idx], batch_size) if idx else (torch.empty(0), torch.empty(0))
    rows = sorted(rt.gather_object(list(zip(idx, rc.tolist(), rr.tolist()))))
    return torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows])


def accuracy_with_ci(rm: RewardModel, pairs: Sequence[PreferencePair], enc: Sequence[EncodedPair], batch_size: int,
                     seed: int, rt: Runtime | None = None) -> tuple[PairMetrics, tuple[float, float]]:
    """Test metrics and the 95% CI of accuracy from a cluster bootstrap over prompts."""
    from rlhf.evaluate.metrics import bootstrap_mean

    rc, rr = score_pairs(rm, enc, batch_size, rt)
    d = (rc - rr).double()
    correct = ((d > 0).double() + 0.5 * (d == 0).double()).tolist()
    est = bootstrap_mean(correct, seed=seed, groups=[p.prompt for p in pairs])
    return pair_metrics(rc, rr), (est.low, est.high)


def _clean(pairs: Sequence[PreferencePair], where: str) -> list[PreferencePair]:
    if not pairs:
        raise DataError(f"{where}: no preference pairs")
    kept = [p for p in pairs if p.chosen != p.rejected]
    if not kept:
        raise DataError(f"{where}: 'chosen' equals 'rejected' in every pair; there is no preference to learn")
    if len(kept) < len(pairs):
        log.warning("%s: dropped %d pairs whose chosen equals rejected", where, len(pairs) - len(kept))
    return kept


def encode(rm: RewardModel, pairs: Sequence[PreferencePair], margin: float) -> list[EncodedPair]:
    return rm.encoder.encode_pairs(
        [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs],
        [p.weight for p in pairs], [float(p.metadata.get("margin", margin)) for p in pairs],
    )


def evaluate(rm: RewardModel, pairs: Sequence[EncodedPair], batch_size: int = 64, rt: Runtime | None = None) -> PairMetrics:
    """Metrics over all of `pairs` (scored by every process under N processes)."""
    return pair_metrics(*score_pairs(rm, pairs, batch_size, rt))


# ------------------------------------------------------------------------------------ setup


def _run_hash(cfg: RewardTrainConfig, pairs: Sequence[PreferencePair]) -> str:
    """Identifies config + data, so a checkpoint is only resumed by the run that wrote it."""
    h = hashlib.sha1(repr(sorted((k, v) for k, v in to_dict(cfg).items() if k not in _RESUME_SAFE)).encode())
    for p in pairs:
        h.update(repr((p.prompt, p.chosen, p.rejected, p.weight)).encode())
    return h.hexdigest()[:16]


def _build_model(cfg: RewardTrainConfig):
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation
    rm = RewardModel.from_pretrained(
        cfg.model, pooling=cfg.pooling, max_length=cfg.max_length, append_eos=cfg.append_eos
    )
    if not cfg.dropout:
        for m in rm.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    peft_model = None
    if cfg.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        lcfg = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules) if cfg.lora_target_modules else None,
        )
        peft_model = get_peft_model(rm.model, lcfg)  # injects adapters into rm.model's modules in place
    return rm, peft_model


def _optimizer(rm: RewardModel, cfg: RewardTrainConfig) -> torch.optim.Optimizer:
    head_ids = {id(p) for p in rm.head().parameters()}
    groups: dict[tuple[float, float], list] = {}
    for p in rm.model.parameters():
        if not p.requires_grad:
            continue
        lr = cfg.head_lr if (id(p) in head_ids and cfg.head_lr is not None) else cfg.lr
        wd = cfg.weight_decay if p.ndim >= 2 else 0.0
        groups.setdefault((lr, wd), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()])


def _schedule(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


# ------------------------------------------------------------------------------------ training


def _train_step(model, rm: RewardModel, opt, sched, pairs: Sequence[EncodedPair], cfg: RewardTrainConfig, rt: Runtime):
    """One optimizer step on a global batch; returns (loss, r_chosen - r_rejected (B,), grad norm) of the whole batch.

    `model` is `rm` as the runtime prepared it (DDP under N processes); each process takes every N-th pair.
    """
    mine, totals = list(pairs), None
    if rt.world_size > 1:
        mine = list(pairs[rt.rank :: rt.world_size])
        totals = (sum(p.weight for p in pairs), len(pairs))
    empty = not mine  # a batch smaller than N: this process still runs (DDP syncs every backward) with weight 0
    batch = collate_pairs(mine or list(pairs[:1]), rm.pad_id, rm.padding_side)
    rc, rr = batch.rewards(model(batch.tokens))  # (b,), (b,): one forward over the distinct responses
    loss = preference_loss(rc, rr, batch.margins, batch.weights, cfg.center_coef, totals) * (0.0 if empty else 1.0)
    opt.zero_grad(set_to_none=True)
    rt.backward(loss)
    gnorm = torch.nn.utils.clip_grad_norm_(rm.model.parameters(), cfg.max_grad_norm or math.inf)
    opt.step()
    sched.step()
    d = (rc - rr).detach()[: len(mine)]
    return rt.sum(float(loss.detach())), rt.gather_ragged(d), float(gnorm)


def train_reward_model(
    cfg: RewardTrainConfig,
    pairs: Sequence[PreferencePair] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    runtime: Runtime | None = None,
) -> RewardTrainResult:
    """Train (or resume) a reward model into `cfg.out_dir`; `pairs` overrides `cfg.pairs`.

    Under `accelerate launch` with N processes (`runtime` defaults to `make_runtime()`) the processes share
    every batch; only rank 0 writes files and calls `on_step`; every process returns the same result.
    """
    rt = runtime or make_runtime()
    setup_cpu(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rt.is_main:
        save_config(cfg, out / "reward.yaml")

    # 1. data: clean, split (by prompt), tokenise once
    all_pairs = _clean(read_pairs(cfg.pairs) if pairs is None else list(pairs), cfg.pairs if pairs is None else "pairs")
    test_pairs: list[PreferencePair] = []
    if cfg.test_fraction > 0:  # first, so the test prompts are the same whatever the validation settings
        all_pairs, test_pairs = hold_out_prompts(all_pairs, cfg.test_fraction, cfg.seed + 1)
    if cfg.eval_pairs:
        train_pairs, eval_pairs = all_pairs, _clean(read_pairs(cfg.eval_pairs), cfg.eval_pairs)
    else:
        train_pairs, eval_pairs = split_pairs(all_pairs, cfg.eval_fraction, cfg.seed)
    if not train_pairs:
        raise DataError(f"{cfg.pairs}: no training pairs left after holding out the eval split")
    rm, peft_model = _build_model(cfg)
    train_enc, eval_enc = encode(rm, train_pairs, cfg.margin), encode(rm, eval_pairs, cfg.margin)
    lengths = [p.length for p in train_enc]
    log.info("reward model: %d train / %d eval pairs, trunk %s, pooling %s", len(train_enc), len(eval_enc),
             cfg.model, rm.spec.pooling)

    # 2. optimisation state
    train_prompts = [p.prompt for p in train_pairs]
    if cfg.prompts_per_step:
        steps_per_epoch = math.ceil(len(set(train_prompts)) / cfg.prompts_per_step)
    else:
        steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    opt = _optimizer(rm, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, round(cfg.warmup_ratio * total)))
    model, opt = rt.prepare(rm, opt)
    eval_every = cfg.eval_every or steps_per_epoch
    save_every = cfg.save_every or eval_every
    ckpt_dir = out / "checkpoint"
    state = {"step": 0, "best_loss": math.inf, "best_step": 0, "bad_evals": 0, "stopped": False, "train_seconds": 0.0,
             "pairs_done": 0}
    chash = _run_hash(cfg, train_pairs + eval_pairs + test_pairs)
    if cfg.resume and (ckpt_dir / "state.pt").exists():
        state = load_checkpoint(ckpt_dir, rm.model, opt, sched, chash)
        log.info("resuming from step %d", state["step"])
    elif ckpt_dir.exists() and rt.is_main:
        for f in ckpt_dir.iterdir():
            f.unlink()
    resumed_from = state["step"]

    # 3. logs: drop records past the checkpoint (they will be recomputed)
    metrics_path = out / "metrics.jsonl"
    old: list[dict] = []
    if metrics_path.exists() and resumed_from:
        with JsonlAppender(metrics_path) as previous:
            old = previous.records
    if rt.is_main:
        write_jsonl(metrics_path, [r for r in old if r["step"] <= resumed_from])
    tb = None
    if cfg.tensorboard and rt.is_main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"), purge_step=resumed_from + 1 if resumed_from else None)

    # 4. the loop
    rm.train()
    step = state["step"]
    with JsonlAppender(metrics_path) if rt.is_main else contextlib.nullcontext() as mlog:
        while step < total and not state["stopped"]:
            epoch, pos = divmod(step, steps_per_epoch)
            order_seed = cfg.seed * 100_003 + epoch
            batches = (prompt_batches(train_prompts, cfg.prompts_per_step, order_seed) if cfg.prompts_per_step
                       else length_grouped_batches(lengths, cfg.batch_size, seed=order_seed))
            for idx in batches[pos:]:
                if step >= total:
                    break
                t0 = time.perf_counter()
                loss_val, d, gnorm = _train_step(model, rm, opt, sched, [train_enc[i] for i in idx], cfg, rt)
                step += 1
                dt = time.perf_counter() - t0
                state["train_seconds"] += dt
                state["pairs_done"] += len(idx)
                acc, lr = float((d > 0).float().mean()), sched.get_last_lr()[0]
                rec = {"step": step, "split": "train", "epoch": round(step / steps_per_epoch, 4), "loss": loss_val,
                       "accuracy": acc, "margin": float(d.mean()), "lr": lr, "grad_norm": gnorm,
                       "pairs_per_s": len(idx) / dt}
                if step % cfg.log_every == 0 or step == total:
                    _log(mlog, tb, rec)

                metrics = None
                if eval_enc and (step % eval_every == 0 or step == total):
                    metrics = evaluate(rm, eval_enc, cfg.eval_batch_size, rt)
                    _log(mlog, tb, {"step": step, "split": "eval", "loss": metrics.loss, "accuracy": metrics.accuracy,
                                    "margin": metrics.mean_margin, "ece": metrics.ece})
                    if metrics.loss < state["best_loss"]:
                        state.update(best_loss=metrics.loss, best_step=step, bad_evals=0)
                        if rt.is_main:
                            atomic_torch_save(trainable_state(rm.model), ckpt_dir / "best.pt")
                    else:
                        state["bad_evals"] += 1
                        patience_out = cfg.patience is not None and state["bad_evals"] >= cfg.patience
                        state["stopped"] = patience_out and step < total
                if rt.is_main and (metrics is not None or step % save_every == 0 or step == total or state["stopped"]):
                    save_checkpoint(ckpt_dir, rm.model, opt, sched, dict(state, step=step), chash)
                if on_step and rt.is_main:
                    on_step(StepInfo(step, total, step / steps_per_epoch, loss_val, acc, lr, metrics))
                if state["stopped"]:
                    log.info("early stop at step %d (best eval loss at step %d)", step, state["best_step"])
                    break
    if tb is not None:
        tb.close()

    # 5. the saved model: best eval loss (or last), LoRA merged; its eval metrics and reward statistics
    rt.barrier()  # rank 0 has written best.pt
    if eval_enc and (ckpt_dir / "best.pt").exists():
        rm.model.load_state_dict(torch.load(ckpt_dir / "best.pt", weights_only=True), strict=False)
    if peft_model is not None:
        rm.model = peft_model.merge_and_unload()
    final_eval = evaluate(rm, eval_enc, cfg.eval_batch_size, rt) if eval_enc else None
    ref = train_enc[: cfg.stats_pairs]
    rc, rr = score_pairs(rm, ref, cfg.eval_batch_size, rt)
    rewards = torch.cat([rc, rr])
    mean, std = float(rewards.mean()), float(rewards.std()) if len(rewards) > 1 else 1.0
    if rt.is_main:
        rm.save_pretrained(out)
        write_json(out / STATS_FILE, {"mean": mean, "std": std, "n": len(rewards),
                                      "reference": f"chosen and rejected of the first {len(ref)} training pairs"})
    if final_eval is not None and rt.is_main:
        write_json(out / "eval_metrics.json", final_eval.to_dict() | {"best_step": state["best_step"]})
    test, test_ci = None, None
    if test_pairs:
        test, test_ci = accuracy_with_ci(rm, test_pairs, encode(rm, test_pairs, cfg.margin), cfg.eval_batch_size,
                                         cfg.seed, rt)
    if test_pairs and rt.is_main:
        write_json(out / "test_metrics.json", test.to_dict() | {
            "accuracy_ci": list(test_ci), "prompts": len({p.prompt for p in test_pairs}),
            "note": "test prompts were used neither for training nor for choosing the checkpoint"})
        log.info("reward model: test accuracy %.3f [%.3f, %.3f] on %d pairs", test.accuracy, *test_ci, len(test_pairs))
    train_seconds = state["train_seconds"]
    rt.barrier()  # the saved model is there when any process returns
    return RewardTrainResult(
        out_dir=out, steps=step, best_step=state["best_step"] if eval_enc else step, total_steps=total,
        train_pairs=len(train_enc), eval_pairs=len(eval_enc), eval=final_eval, normalization=(mean, std),
        stopped_early=bool(state["stopped"]), resumed_from=resumed_from, train_seconds=train_seconds,
        pairs_per_s=state["pairs_done"] / max(train_seconds, 1e-9),
        test_pairs=len(test_pairs), test_prompts=len({p.prompt for p in test_pairs}), test=test, test_accuracy_ci=test_ci,
        model=rm,
    )


def _log(mlog: JsonlAppender | None, tb, rec: dict) -> None:
    if mlog is None:  # not rank 0
        return
    mlog.append(rec)
    if tb is not None:
        for k, v in rec.items():
            if k not in ("step", "split", "epoch") and isinstance(v, (int, float)):
                tb.add_scalar(f"{rec['split']}/{k}", v, rec["step"])
