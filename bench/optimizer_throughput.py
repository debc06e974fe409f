"""DPO, RLOO and GRPO throughput and memory: rlhf vs TRL 1.16.0's DPOTrainer, RLOOTrainer, GRPOTrainer, one run.

Both sides get the same random-init GPT-2 shape (124M-shaped: 12 layers x 768, and a tiny 2 x 64; dropout 0),
the same tokenizer, the same synthetic data (word-salad prompts; chosen/rejected pairs for DPO), the same
LoRA (peft, r=16, alpha=32, dropout 0, all linear layers; the reference is the base with the adapter off),
fp32 on CPU, AdamW at lr 1e-5, grad-norm clip 1.0, no gradient checkpointing, no eval, no logging, no saving.
RLOO/GRPO: k completions per prompt, B episodes per step, sampled at temperature 1 (no top-p/top-k) for L
tokens, then B / M minibatches x E epochs; beta 0.05 (RLOO: k1 KL summed in the reward; GRPO: k3 KL in the
loss, per-response mean then mean, rewards scaled by the group std); the same cheap python reward (distinct
words in the completion). DPO: sigmoid loss, beta 0.1, B pairs per optimizer step. Each (implementation,
model, algorithm) runs in its own subprocess, so the peak RSS (ru_maxrss of that process) is its own.
Steady-state throughput skips the first (warm-up) step: episodes (or pairs) / wall time between step ends.

TRL 1.16.0 is NOT the shared venv's trl (1.12.0, which bench/ppo_throughput.py needs: TRL dropped PPO
later). The script installs it once, without dependencies, into .bench/trl-1.16.0 (git-ignored) and puts
that folder first on sys.path in TRL's subprocesses only:

    pip install --target .bench/trl-1.16.0 --no-deps trl==1.16.0      # done by the script when missing
    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/optimizer_throughput.py
    .venv/bin/python bench/optimizer_throughput.py --shapes tiny --steps 3     # a quick smoke run
    .venv/bin/python bench/optimizer_throughput.py --profile gpt2-124m         # where one RLOO step's time goes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _machine import machine, run_worker

TRL_VERSION = "1.16.0"
TRL_DIR = Path(__file__).resolve().parents[1] / ".bench" / f"trl-{TRL_VERSION}"
SHAPES = {
    "gpt2-124m": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
}
ALGOS = ("dpo", "rloo", "grpo")
WORDS = ("the cat dog house tree river stone light dark small large green red blue water fire wind "
         "road city field music book paper table chair window door bread apple horse bird song night day").split()
LORA = dict(r=16, alpha=32)
LR, BETA_ONLINE, BETA_DPO = 1e-5, 0.05, 0.1


# ---------------------------------------------------------------------- shared by both sides
def distinct_words(prompts, completions, **_) -> list[float]:
    """The reward: distinct words in the completion / 10 (cheap, deterministic, the same function in both)."""
    return [len(set(c.split())) / 10.0 for c in completions]


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n)]


def synthetic_pairs(n: int, length: int, seed: int = 1) -> list[dict]:
    """Chosen: distinct words; rejected: one word repeated; both `length` words after a 12-word prompt."""
    rng = random.Random(seed)
    prompts = synthetic_prompts(n, seed)
    return [{"prompt": p, "chosen": " ".join(rng.choice(WORDS) for _ in range(length)),
             "rejected": " ".join([rng.choice(WORDS)] * length)} for p in prompts]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SETUP_RSS: list[float] = []  # peak RSS once the libraries are imported and the model is built: what both sides pay


def setup(shape: str, threads: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf.models.registry import load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = None  # plain-text prompts for random models
    tok.pad_token = "<|endoftext|>"  # distinct from EOS: TRL derives masks from `ids != pad`
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **SHAPES[shape])
    policy = GPT2LMHeadModel(cfg).eval()
    policy.generation_config.pad_token_id = tok.pad_token_id
    SETUP_RSS.append(peak_rss_mb())
    return tok, policy


def steady_rate(ends: list[float], units_per_step: int) -> float:
    """Units per second between the end of the first (warm-up) step and the end of the last."""
    return units_per_step * (len(ends) - 1) / (ends[-1] - ends[0])


# ---------------------------------------------------------------------- rlhf
def run_ours(a) -> dict:
    from rlhf.config import load_config
    from rlhf.policy import DPOConfig, GRPOConfig, RLOOConfig, train_policy
    from rlhf.reward.functions import FunctionReward
    from rlhf.types import PreferencePair, Prompt

    tok, policy = setup(a.shape, a.threads)
    common = [f"out_dir={a.tmp}", "resume=false", "tensorboard=false", "checkpoint_every=0", f"lr={LR}",
              f"lora.r={LORA['r']}", f"lora.alpha={LORA['alpha']}", "lora.dropout=0.0", "max_grad_norm=1.0", "seed=0",
              f"threads={a.threads}", "max_prompt_tokens=64", "sampling.temperature=1.0",
              f"sampling.max_new_tokens={a.length}"]
    old_logprobs = [f"old_logprobs={a.old_logprobs}"]
    ends: list[float] = []

    def clock(m: dict) -> None:
        ends.append(time.perf_counter())
        if getattr(a, "on_step", None):
            a.on_step(m)

    if a.algo == "dpo":
        cfg = load_config(DPOConfig, None, common + [
            f"batch_size={a.dpo_batch}", f"grad_accum_steps={a.dpo_accum}", f"max_steps={a.steps}", f"beta={BETA_DPO}",
            "loss_type=sigmoid", "eval_fraction=0", "eval_every=0", "kl_prompts=2", f"max_response_tokens={a.length + 1}"])
        pairs = [PreferencePair(d["prompt"], d["chosen"], d["rejected"]) for d in synthetic_pairs(a.dpo_batch * a.steps, a.length)]
        train_policy(cfg, model=policy, tokenizer=tok, pairs=pairs, on_step=clock)
        return {"rate": steady_rate(ends, a.dpo_batch), "unit": "pairs/s"}
    online = common + [
        f"batch_size={a.batch}", f"mini_batch_size={a.batch // a.minibatches}", f"forward_batch_size={a.batch // a.minibatches}",
        f"update_epochs={a.epochs}", f"k={a.k}", f"max_steps={a.steps}", f"kl_coef={BETA_ONLINE}", "adaptive_kl=false",
        "clip_range=0.2", *old_logprobs]
    if a.algo == "rloo":
        cfg = load_config(RLOOConfig, None, online + ["kl_estimator=k1"])
    else:
        cfg = load_config(GRPOConfig, None, online + ["kl_in_loss=true", "loss_aggregation=sequence", "scale_rewards=true"])
    prompts = [Prompt(str(i), t) for i, t in enumerate(synthetic_prompts(a.batch // a.k * a.steps))]
    train_policy(cfg, FunctionReward(distinct_words, "distinct_words"), model=policy, tokenizer=tok, prompts=prompts,
                 on_step=clock)
    return {"rate": steady_rate(ends, a.batch), "unit": "episodes/s"}


# ---------------------------------------------------------------------- TRL
def run_trl(a) -> dict:
    sys.path.insert(0, str(TRL_DIR))  # TRL 1.16.0 ahead of the venv's 1.12.0
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    assert trl.__version__ == TRL_VERSION, f"imported trl {trl.__version__} from {trl.__file__}"
    if a.trl_keep_freed_memory:  # the allocator setting rlhf's training entry points make, given to TRL too
        from rlhf.cpu import keep_freed_memory

        assert keep_freed_memory()
    tok, policy = setup(a.shape, a.threads)
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                             bias="none", task_type="CAUSAL_LM")
    common = dict(output_dir=a.tmp, learning_rate=LR, max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0,
                  weight_decay=0.0, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True, disable_dropout=True,
                  save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                  seed=0, dataloader_num_workers=0)
    if a.algo == "dpo":
        args = trl.DPOConfig(per_device_train_batch_size=a.dpo_batch // a.dpo_accum, gradient_accumulation_steps=a.dpo_accum,
                             max_steps=a.steps, beta=BETA_DPO, loss_type=["sigmoid"], max_length=None,
                             precompute_ref_log_probs=False, **common)
        ds = Dataset.from_list(synthetic_pairs(a.dpo_batch * a.steps, a.length))
        trainer = trl.DPOTrainer(model=policy, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                                 callbacks=[Clock()])
        trainer.train()
        return {"rate": steady_rate(ends, a.dpo_batch), "unit": "pairs/s"}
    # One of our steps = one TRL generation batch: B completions, split into B / m micro-batches of m (our
    # mini_batch_size with no accumulation), reused for E iterations: B / m x E optimizer steps per generation.
    micro = a.batch // a.minibatches
    per_gen = a.minibatches * a.epochs
    online = dict(per_device_train_batch_size=micro, gradient_accumulation_steps=1, steps_per_generation=a.minibatches,
                  num_iterations=a.epochs, num_generations=a.k, max_completion_length=a.length, temperature=1.0, top_p=1.0,
                  top_k=0, beta=BETA_ONLINE, epsilon=0.2, max_steps=a.steps * per_gen, **common)
    ds = Dataset.from_dict({"prompt": synthetic_prompts(a.batch // a.k * a.steps)})
    if a.algo == "rloo":
        args = trl.RLOOConfig(normalize_advantages=False, **online)
        cls = trl.RLOOTrainer
    else:
        args = trl.GRPOConfig(loss_type="grpo", scale_rewards="group", importance_sampling_level="token",
                              use_bias_correction_kl=False, **online)
        cls = trl.GRPOTrainer
    trainer = cls(model=policy, reward_funcs=distinct_words, args=args, train_dataset=ds, processing_class=tok,
                  peft_config=peft_config, callbacks=[Clock()])
    trainer.train()
    return {"rate": steady_rate(ends[per_gen - 1 :: per_gen], a.batch), "unit": "episodes/s"}


def profile_rloo(a) -> None:
    """Profile rlhf's RLOO step 2 (step 1 warms up) with torch.profiler: phase times, then forward vs backward."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    prof, steps = profile(activities=[ProfilerActivity.CPU], record_shapes=True), []

    def on_step(m: dict) -> None:
        if m["step"] == 1:
            prof.start()
        elif m["step"] == 2:
            prof.stop()
            steps.append(m)

    a.impl, a.algo, a.steps, a.on_step = "rlhf", "rloo", 2, on_step
    with tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        run_ours(a)
    m, ev = steps[0], prof.key_averages()
    backward = sum(e.cpu_time_total for e in ev if e.key.startswith("autograd::engine::evaluate_function")) / 1e6
    optim = sum(e.cpu_time_total for e in ev if e.key.startswith("Optimizer.step")) / 1e6
    print(f"machine: {machine(*versions())}, torch threads {torch.get_num_threads()}")
    print(f"rlhf RLOO, {a.shape}, LoRA, step 2 of 2: {a.batch} episodes x {a.length} tokens, {a.minibatches} minibatches "
          f"x {a.epochs} epoch(s)")
    print(f"  step {m['time/step']:.2f} s = generate {m['time/generate']:.2f} s "
          f"({1000 * m['time/generate'] / max(m['response/length_mean'], 1):.0f} ms per token step) "
          f"+ score {m['time/score']:.3f} s + old/ref log-prob forwards {m['time/forward']:.2f} s "
          f"+ train {m['time/train']:.2f} s")
    print(f"  train = forward ~{m['time/train'] - backward - optim:.2f} s + backward {backward:.2f} s + AdamW {optim:.2f} s "
          f"(backward and AdamW from the profiler, forward the rest)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12))


def worker(a) -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        out = run_ours(a) if a.impl == "rlhf" else run_trl(a)
    out["peak_rss_mb"] = peak_rss_mb()
    out["setup_rss_mb"] = SETUP_RSS[0] if SETUP_RSS else float("nan")
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------- driver
def ensure_trl() -> None:
    """Install trl==1.16.0 (no deps: the venv has them) into .bench/ once."""
    if (TRL_DIR / "trl" / "__init__.py").exists():
        return
    print(f"installing trl=={TRL_VERSION} into {TRL_DIR} (bench only)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(TRL_DIR),
                    f"trl=={TRL_VERSION}"], check=True)


def versions() -> list[str]:
    import peft
    import torch
    import transformers

    return [f"torch {torch.__version__}", f"transformers {transformers.__version__}", f"peft {peft.__version__}",
            f"trl {TRL_VERSION} (from {TRL_DIR.relative_to(TRL_DIR.parents[1])})"]


DIFFERENCES = """\
differences that remain (not removable by settings):
  - TRL tokenizes the whole dataset before training (not timed); rlhf tokenizes each batch inside the step (timed).
  - TRL's RLOO/GRPO loss also computes the per-token entropy (for its logs); rlhf's RLOO/GRPO do not need it.
  - rlhf's training entry points keep freed memory in glibc's heap (rlhf.cpu.keep_freed_memory); TRL's process
    runs with glibc's defaults unless --trl-keep-freed-memory gives it the same setting.
  - rlhf takes the old-policy log-probs from its sampler (old_logprobs=sampler, its default; --old-logprobs forward
    recomputes them); TRL recomputes them with a no-grad forward (it needs them with steps_per_generation=2).
  - TRL generates with transformers `generate`; rlhf with its own KV-cache sampler (different random draws,
    so completion lengths can differ a little; with random weights EOS is rare and most run the full L tokens).
  - TRL runs its RLOO/GRPO forward in train() mode with dropout disabled; rlhf in eval() mode (dropout is 0 in both).
  - rlhf's DPO ends with a KL-to-reference sample of 2 prompts and both save the adapter/config (not timed; in RSS)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,gpt2-124m")
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--batch", type=int, default=16, help="RLOO/GRPO episodes (completions) per step")
    ap.add_argument("--k", type=int, default=4, help="completions per prompt")
    ap.add_argument("--minibatches", type=int, default=2, help="optimizer steps per epoch over a rollout batch")
    ap.add_argument("--epochs", type=int, default=1, help="passes over each rollout batch (TRL's num_iterations)")
    ap.add_argument("--length", type=int, default=32, help="completion tokens (RLOO/GRPO) / response words (DPO)")
    ap.add_argument("--dpo-batch", type=int, default=16, help="DPO pairs per optimizer step")
    ap.add_argument("--dpo-accum", type=int, default=2, help="DPO gradient-accumulation micro-batches per step")
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trl-keep-freed-memory", action="store_true",
                    help="give TRL's processes the allocator setting rlhf's training makes (rlhf.cpu.keep_freed_memory)")
    ap.add_argument("--old-logprobs", choices=("sampler", "forward"), default="sampler",
                    help="rlhf RLOO/GRPO: old-policy log-probs from the sampler (default) or a forward")
    ap.add_argument("--profile", metavar="SHAPE", help="profile one rlhf RLOO step at SHAPE instead (torch.profiler)")
    ap.add_argument("--worker", nargs=3, metavar=("IMPL", "SHAPE", "ALGO"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.impl, a.shape, a.algo = a.worker
        worker(a)
        return
    if a.profile:
        warnings.filterwarnings("ignore")
        a.shape = a.profile
        profile_rloo(a)
        return
    if a.steps < 2:
        ap.error("--steps must be >= 2 (the first step is warm-up)")
    if a.batch % a.k or a.batch % a.minibatches or (a.batch // a.minibatches) % 1 or a.dpo_batch % a.dpo_accum:
        ap.error("--batch must be a multiple of --k and --minibatches, --dpo-batch of --dpo-accum")

    ensure_trl()
    print(f"machine: {machine(*versions())}")
    print(f"settings: RLOO/GRPO {a.batch} episodes/step = {a.batch // a.k} prompts x k={a.k}, {a.length} completion "
          f"tokens, {a.minibatches} minibatches x {a.epochs} epoch(s); DPO {a.dpo_batch} pairs/step "
          f"({a.dpo_accum} micro-batches), {a.length}-word responses; {a.steps} steps (first = warm-up); "
          f"LoRA r={LORA['r']} alpha={LORA['alpha']} all-linear; fp32; {a.threads} threads; "
          f"rlhf old log-probs from the {a.old_logprobs}; TRL with glibc's "
          f"{'allocator setting as rlhf' if a.trl_keep_freed_memory else 'default allocator'}")
    passthrough = ["--batch", str(a.batch), "--k", str(a.k), "--minibatches", str(a.minibatches), "--epochs", str(a.epochs),
                   "--length", str(a.length), "--dpo-batch", str(a.dpo_batch), "--dpo-accum", str(a.dpo_accum),
                   "--steps", str(a.steps), "--threads", str(a.threads), "--old-logprobs", a.old_logprobs,
                   *(["--trl-keep-freed-memory"] if a.trl_keep_freed_memory else [])]
    rows = []
    for shape in a.shapes.split(","):
        for algo in a.algos.split(","):
            res = {}
            for impl in ("rlhf", "trl"):
                r = run_worker([sys.executable, __file__, "--worker", impl, shape, algo, *passthrough],
                               f"{shape} {algo} {impl}")
                if r is not None:
                    res[impl] = r
            rows.append((shape, algo, res))

    print()
    print(f"{'model':>10} {'algo':>5} {'unit':>11} {'rlhf':>8} {'TRL':>8} {'ratio':>7} {'>=2x?':>6} "
          f"{'rlhf MB':>8} {'TRL MB':>8} {'ratio':>7} {'<=0.6x?':>8} {'setup MB':>17}")
    for shape, algo, res in rows:
        if len(res) < 2:
            print(f"{shape:>10} {algo:>5}  incomplete: {', '.join(res) or 'no'} result(s)")
            continue
        o, t = res["rlhf"], res["trl"]
        speed, mem = o["rate"] / t["rate"], o["peak_rss_mb"] / t["peak_rss_mb"]
        print(f"{shape:>10} {algo:>5} {o['unit']:>11} {o['rate']:>8.2f} {t['rate']:>8.2f} {speed:>6.2f}x "
              f"{'met' if speed >= 2 else 'missed':>6} {o['peak_rss_mb']:>8.0f} {t['peak_rss_mb']:>8.0f} {mem:>6.2f}x "
              f"{'met' if mem <= 0.6 else 'missed':>8} {o['setup_rss_mb']:>8.0f} {t['setup_rss_mb']:>8.0f}")
    print("setup MB: peak RSS (rlhf, TRL) once the libraries are imported and the random model is built, before any step")
    print()
    print(DIFFERENCES)


if __name__ == "__main__":
    main()
