"""PPO throughput and memory: rlhf's PPO vs TRL 1.12.0's `trl.experimental.ppo`, same settings, one run.

Models are random-init GPT-2 shapes (124M-shaped: 12 layers x 768, and a tiny 2 x 64), each with
LoRA (r=16, all linear layers, in both) and without (full fine-tuning in both). Same prompts
(red-team, plain text), batch, response length, PPO epochs and minibatches, one tiny random
reward model shared by both. Each (implementation, model, LoRA) runs in its own subprocess so the
peak RSS is its own. Steady-state episodes/s skips the first (warm-up) step.

    pip install -r bench/requirements.txt      # trl==1.12.0 (bench only)
    flock /tmp/rlhf-bench.lock .venv/bin/python bench/ppo_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings

from _machine import machine, run_worker

SHAPES = {
    "gpt2-124m": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(shape: str, n_prompts: int, threads: int):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from rlhf.data import read_prompts, resolve_prompts
    from rlhf.models.registry import load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = None  # plain-text prompts for random models
    tok.pad_token = "<|endoftext|>"  # distinct from EOS: TRL derives its masks from `ids != pad`
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, **SHAPES[shape])).eval()
    policy.generation_config.pad_token_id = tok.pad_token_id
    rm = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), num_labels=1, pad_token_id=tok.pad_token_id,
                                                  **SHAPES["tiny"])).eval()
    texts = [p.prompt for p in read_prompts(resolve_prompts("redteam"), split="train")]
    texts = (texts * (n_prompts // len(texts) + 1))[:n_prompts]
    return tok, policy, rm, texts


def run_ours(a) -> dict:
    import torch

    from rlhf.config import load_config
    from rlhf.policy import PPOConfig, train_ppo
    from rlhf.types import Prompt

    tok, policy, rm, texts = setup(a.shape, a.batch * a.steps, a.threads)

    class RMReward:
        name, normalization = "random-gpt2-rm", None

        def __call__(self, prompts, completions):
            enc = tok([p + c for p, c in zip(prompts, completions)], return_tensors="pt", padding=True,
                      padding_side="right", truncation=True, max_length=256)
            with torch.no_grad():
                return rm(**enc).logits[:, 0].float()

    cfg = load_config(PPOConfig, None, [
        f"out_dir={a.tmp}", "resume=false", f"max_steps={a.steps}", f"batch_size={a.batch}",
        f"mini_batch_size={a.batch // a.minibatches}", f"update_epochs={a.epochs}", f"sampling.max_new_tokens={a.length}",
        "sampling.temperature=1.0", f"forward_batch_size={a.batch}", f"lora.enabled={a.lora}", "lora.r=16",
        "tensorboard=false", "checkpoint_every=0", "kl_coef=0.05", "adaptive_kl=false", "lr=1e-5",
        "max_prompt_tokens=64",
    ])
    prompts = [Prompt(str(i), t) for i, t in enumerate(texts)]
    res = train_ppo(cfg, RMReward(), model=policy, tokenizer=tok, prompts=prompts)
    steady = res.history[1:]
    return {
        "episodes_per_s": a.batch * len(steady) / sum(m["time/step"] for m in steady),
        "gen_tokens_per_s": sum(m["response/length_mean"] * a.batch for m in steady) / sum(m["time/generate"] for m in steady),
    }


def run_trl(a) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import copy

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import GPT2ForSequenceClassification, TrainerCallback

    import trl.experimental.ppo.ppo_trainer as trl_ppo
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok, policy, rm, texts = setup(a.shape, a.batch * a.steps, a.threads)
    torch.manual_seed(1)
    value_cfg = copy.deepcopy(policy.config)
    value_cfg.num_labels = 1
    value_model = GPT2ForSequenceClassification(value_cfg).eval()  # TRL's critic: a separate full model
    value_model.transformer.load_state_dict(policy.transformer.state_dict())
    ds = Dataset.from_dict({"input_ids": [tok(t, truncation=True, max_length=64)["input_ids"] for t in texts]})

    gen = {"seconds": 0.0, "tokens": 0, "calls": 0}
    original = trl_ppo.batch_generation

    def timed_generation(model, queries, fwd_bs, pad_id, gcfg):
        t = time.perf_counter()
        out = original(model, queries, fwd_bs, pad_id, gcfg)
        gen["calls"] += 1
        if gen["calls"] > 1:  # skip the warm-up step, as for ours
            gen["seconds"] += time.perf_counter() - t
            gen["tokens"] += int((out[0][:, queries.shape[1]:] != pad_id).sum())
        return out

    trl_ppo.batch_generation = timed_generation
    step_ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            step_ends.append(time.perf_counter())

    args = PPOConfig(
        output_dir=a.tmp, per_device_train_batch_size=a.batch // a.minibatches, gradient_accumulation_steps=a.minibatches,
        num_mini_batches=a.minibatches, num_ppo_epochs=a.epochs, total_episodes=a.batch * a.steps,
        response_length=a.length, temperature=1.0, local_rollout_forward_batch_size=a.batch, num_sample_generations=0,
        learning_rate=1e-5, kl_coef=0.05, stop_token="eos", save_strategy="no", report_to="none", use_cpu=True,
        seed=0, logging_steps=1, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM") if a.lora else None
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=rm,
                         train_dataset=ds, eval_dataset=ds, value_model=value_model, peft_config=peft_config,
                         callbacks=[Clock()])
    trainer.train()
    return {
        "episodes_per_s": a.batch * (len(step_ends) - 1) / (step_ends[-1] - step_ends[0]),
        "gen_tokens_per_s": gen["tokens"] / gen["seconds"],
    }


def worker(a) -> None:
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        out = run_ours(a) if a.impl == "rlhf" else run_trl(a)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def versions() -> list[str]:
    import torch
    import transformers

    try:
        import trl

        trl_v = trl.__version__
    except ImportError:
        trl_v = "not installed"
    return [f"torch {torch.__version__}", f"transformers {transformers.__version__}", f"trl {trl_v}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,gpt2-124m")
    ap.add_argument("--batch", type=int, default=16, help="episodes per PPO step")
    ap.add_argument("--minibatches", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--length", type=int, default=32, help="response tokens")
    ap.add_argument("--steps", type=int, default=4, help="PPO steps per run (the first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=3, metavar=("IMPL", "SHAPE", "LORA"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.impl, a.shape, a.lora = a.worker[0], a.worker[1], a.worker[2] == "lora"
        worker(a)
        return

    print(f"machine: {machine(*versions())}")
    print(f"settings: batch {a.batch} episodes/step, {a.minibatches} minibatches, {a.epochs} PPO epochs, "
          f"{a.length} response tokens, {a.steps} steps (first = warm-up), {a.threads} threads, fp32")
    header = f"{'model':>10} {'mode':>5} {'impl':>5} {'episodes/s':>11} {'gen tok/s':>10} {'peak RSS MB':>12}"
    rows = []
    for shape in a.shapes.split(","):
        for mode in ("lora", "full"):
            res = {}
            for impl in ("rlhf", "trl"):
                cmd = [sys.executable, __file__, "--worker", impl, shape, mode, "--batch", str(a.batch),
                       "--minibatches", str(a.minibatches), "--epochs", str(a.epochs), "--length", str(a.length),
                       "--steps", str(a.steps), "--threads", str(a.threads)]
                r = run_worker(cmd, f"{shape} {mode} {impl}")
                if r is not None:
                    res[impl] = r
            rows.append((shape, mode, res))
    print()
    print(header)
    for shape, mode, res in rows:
        for impl, r in res.items():
            print(f"{shape:>10} {mode:>5} {impl:>5} {r['episodes_per_s']:>11.2f} {r['gen_tokens_per_s']:>10.1f} {r['peak_rss_mb']:>12.0f}")
        if len(res) == 2:
            o, t = res["rlhf"], res["trl"]
            print(f"{'':>10} {'':>5} {'ratio':>5} {o['episodes_per_s'] / t['episodes_per_s']:>10.2f}x "
                  f"{o['gen_tokens_per_s'] / t['gen_tokens_per_s']:>9.2f}x {o['peak_rss_mb'] / t['peak_rss_mb']:>11.2f}x")


if __name__ == "__main__":
    main()
