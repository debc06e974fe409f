"""`rlhf evaluate`: base vs aligned policy on held-out prompts, under learned rewards and gold scorers.

Phases: 1. sample both policies on the same prompts with the same seed -> 2. score with every
reward and gold scorer -> 3. KL of aligned to base on the aligned samples -> 4. metrics, win rate,
reward-hacking check, examples -> 5. summary.json + report.html.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from rlhf.config import save_config
from rlhf.data import read_prompts, resolve_prompts, write_json, write_jsonl
from rlhf.evaluate.metrics import HackingCheck, distinct_n, reward_hacking_check, summarize, win_outcomes, win_rate
from rlhf.generation import SamplingConfig, SampleOutput, decode_responses, encode_prompts, eos_ids, response_logprobs, sample
from rlhf.models.lora import merged_for_sampling
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm
from rlhf.reward.functions import RewardFunction, load_reward_function
from rlhf.scorers import get_scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    aligned: str = "runs/ppo"
    """Aligned policy: a `rlhf ppo` output folder, a peft adapter folder, or a full model (folder/alias)."""
    base: str = DEFAULT_POLICY
    """Base policy (the adapter's base model when `aligned` is an adapter)."""
    prompts: str = "redteam"
    """Eval prompt file or built-in set (helpful, redteam)."""
    split: str | None = "eval"
    """Keep only prompts of this split (null = all)."""
    limit: int | None = None
    """Use only the first N prompts."""
    out_dir: str = "runs/evaluate"
    """Output folder for completions, summary.json and report.html."""
    rewards: tuple[str, ...] = ()
    """Learned reward specs to report (e.g. rm:runs/demo/reward); the first one is 'the learned reward'."""
    scorers: tuple[str, ...] = ("toxicity", "sentiment")
    """Gold scorers to report."""
    judge: str = "scorer:toxicity"
    """Reward spec that decides the win rate (higher reward wins)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=48, temperature=0.7, top_p=0.95))
    """Sampling settings, identical for both policies."""
    batch_size: int = 32
    """Sequences per forward pass."""
    seed: int = 0
    """Sampling seed (the same for both policies, batch by batch)."""
    kl_target: float | None = None
    """PPO's KL target (nats per response); the hacking check flags KL far past it. Compare like with like:
    sample with the rollout's settings, since KL per response grows with length and depends on temperature."""
    num_examples: int = 8
    """Side-by-side examples in the report (largest improvements and regressions)."""


@dataclass
class PolicySamples:
    texts: list[str]
    lengths: list[int]
    finished: list[bool]
    kl: list[float] | None = None  # per-sequence KL to base (aligned only)


@dataclass
class EvaluationResult:
    summary: dict
    out_dir: Path
    report_path: Path
    hacking: HackingCheck


@contextlib.contextmanager
def _adapter_disabled(model) -> Iterator[None]:
    with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
        yield


def load_policies(cfg: EvaluateConfig):
    """(aligned, base, tokenizer). With a LoRA adapter, `base` is the same object and is used with the adapter off."""
    from rlhf.models.lora import load_adapter

    path = Path(cfg.aligned)
    adapter = path / "adapter" if (path / "adapter" / "adapter_config.json").exists() else path
    if (adapter / "adapter_config.json").exists():
        base, tok = load_causal_lm(cfg.base)
        model = load_adapter(base, adapter, merge=False)
        return model, None, tok
    full = path / "policy" if (path / "policy").is_dir() else path
    aligned, tok = load_causal_lm(full if full.exists() else cfg.aligned)
    base, _ = load_causal_lm(cfg.base)
    return aligned, base, tok


def _sample_all(model, tok, prompts: list[str], cfg: EvaluateConfig, base_model=None, on_batch=None) -> tuple[PolicySamples, list[SampleOutput]]:
    outs, texts = [], []
    eos = eos_ids(tok, model)
    for i in range(0, len(prompts), cfg.batch_size):
        ids, mask = encode_prompts(tok, prompts[i : i + cfg.batch_size], 512)
        gen = torch.Generator().manual_seed(cfg.seed + i)
        out = sample(model, ids, mask, cfg.sampling, eos, tok.pad_token_id, gen)
        outs.append(out)
        texts += decode_responses(tok, out)
        if on_batch:
            on_batch()
    lengths = [n for o in outs for n in o.response_lengths.tolist()]
    finished = [f for o in outs for f in o.finished.tolist()]
    return PolicySamples(texts, lengths, finished), outs


@torch.inference_mode()
def _logprobs(model, out: SampleOutput, temperature: float) -> torch.Tensor:
    """Per-token log-probs of the sampled responses: (B, T)."""
    from rlhf.generation import position_ids_from_mask

    T = out.responses.shape[1]
    logits = model(
        input_ids=out.sequences, attention_mask=out.attention_mask,
        position_ids=position_ids_from_mask(out.attention_mask), logits_to_keep=T + 1,
    ).logits[:, :-1]  # (B, T, V): the logits that predicted each response token
    return response_logprobs(logits, out.responses, temperature) * out.response_mask


def sequence_kl(aligned, base, outs: list[SampleOutput], temperature: float) -> list[float]:
    """Monte-Carlo KL(aligned || base) per sequence: sum over tokens of log p_aligned - log p_base (k1)."""
    kls = []
    for out in outs:
        lp = _logprobs(aligned, out, temperature)
        if base is None:
            with _adapter_disabled(aligned):
                ref = _logprobs(aligned, out, temperature)
        else:
            ref = _logprobs(base, out, temperature)
        kls += (lp - ref).sum(-1).tolist()
    return kls


def _score(rewards: dict[str, RewardFunction], scorers: dict, prompts: list[str], texts: list[str], batch: int) -> dict[str, list[float]]:
    scores: dict[str, list[float]] = {}
    for name, fn in rewards.items():
        vals: list[float] = []
        for i in range(0, len(texts), batch):
            vals += fn(prompts[i : i + batch], texts[i : i + batch]).tolist()
        scores[name] = vals
    for name, sc in scorers.items():
        scores[name] = sc.score(texts)
    return scores


def run_evaluate(
    cfg: EvaluateConfig,
    policies: tuple | None = None,
    extra_sections: dict | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationResult:
    """Evaluate base vs aligned. `policies` = (aligned, base_or_None, tokenizer) skips loading."""
    from rlhf.evaluate.report import write_report

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "evaluate.yaml")
    records = read_prompts(resolve_prompts(cfg.prompts), split=cfg.split)[: cfg.limit]
    prompts = [p.prompt for p in records]
    aligned, base, tok = policies or load_policies(cfg)
    rewards = {spec: load_reward_function(spec) for spec in cfg.rewards}
    judge = rewards.get(cfg.judge) or load_reward_function(cfg.judge)
    scorers = {name: get_scorer(name) for name in cfg.scorers}
    n_batches = -(-len(prompts) // cfg.batch_size)
    done = [0]

    def tick(stage: str):
        def f():
            done[0] += 1
            if on_progress:
                on_progress(stage, done[0], 2 * n_batches)
        return f

    # 1. sample both policies with the same seeds
    t0 = time.perf_counter()
    if base is None:
        with _adapter_disabled(aligned):
            base_s, _ = _sample_all(aligned, tok, prompts, cfg, on_batch=tick("sampling base"))
    else:
        base_s, _ = _sample_all(base, tok, prompts, cfg, on_batch=tick("sampling base"))
    with merged_for_sampling(aligned):  # plain matmuls: decode is latency-bound on CPU
        aligned_s, aligned_outs = _sample_all(aligned, tok, prompts, cfg, on_batch=tick("sampling aligned"))
    # 2. score
    if on_progress:
        on_progress("scoring", done[0], 2 * n_batches)
    per = {}
    for name, s in (("base", base_s), ("aligned", aligned_s)):
        per[name] = _score(rewards, scorers, prompts, s.texts, cfg.batch_size)
        per[name]["judge"] = judge(prompts, s.texts).tolist()
    # 3. KL of aligned to base on aligned samples
    aligned_s.kl = sequence_kl(aligned, base, aligned_outs, cfg.sampling.temperature)
    # 4. metrics
    summary = summarize_policies(cfg, prompts, base_s, aligned_s, per, scorers)
    summary["seconds"] = time.perf_counter() - t0
    hacking = reward_hacking_check(
        summary["learned_reward_delta"], summary["gold_deltas"], summary["policies"]["aligned"]["kl_to_base"],
        cfg.kl_target,
    )
    summary["reward_hacking"] = hacking.as_dict()
    for name, s in (("base", base_s), ("aligned", aligned_s)):
        write_jsonl(out_dir / f"completions_{name}.jsonl", [
            {"id": r.id, "prompt": r.prompt, "completion": t, **{k: v[i] for k, v in per[name].items()}}
            for i, (r, t) in enumerate(zip(records, s.texts))
        ])
    summary["examples"] = pick_examples(records, base_s.texts, aligned_s.texts, per, cfg.num_examples)
    write_json(out_dir / "summary.json", summary)
    # 5. report
    report = write_report(out_dir, summary, per, extra_sections or {})
    return EvaluationResult(summary, out_dir, report, hacking)


def summarize_policies(cfg, prompts, base_s: PolicySamples, aligned_s: PolicySamples, per: dict, scorers: dict) -> dict:
    policies = {}
    for name, s in (("base", base_s), ("aligned", aligned_s)):
        p = {key: summarize(vals) for key, vals in per[name].items() if key != "judge"}
        p["response_length"] = summarize(s.lengths)
        p["finished_rate"] = float(np.mean(s.finished))
        p["distinct_1"], p["distinct_2"] = distinct_n(s.texts, 1), distinct_n(s.texts, 2)
        p["kl_to_base"] = float(np.mean(s.kl)) if s.kl is not None else 0.0
        policies[name] = p
    gold_deltas = {}
    for name, sc in scorers.items():
        d = policies["aligned"][name]["mean"] - policies["base"][name]["mean"]
        gold_deltas[name] = d if sc.higher_is_better else -d
    learned = cfg.rewards[0] if cfg.rewards else None
    wr = win_rate(per["aligned"]["judge"], per["base"]["judge"], seed=cfg.seed)
    return {
        "num_prompts": len(prompts),
        "judge": cfg.judge,
        "learned_reward": learned,
        "policies": policies,
        "win_rate": wr.as_dict(),
        "gold_deltas": gold_deltas,
        "learned_reward_delta": (policies["aligned"][learned]["mean"] - policies["base"][learned]["mean"]) if learned else None,
        "toxicity_before": policies["base"].get("toxicity", {}).get("mean"),
        "toxicity_after": policies["aligned"].get("toxicity", {}).get("mean"),
    }


def pick_examples(records, base_texts, aligned_texts, per, k: int) -> list[dict]:
    """Side-by-side examples, largest judge improvements first, then the worst regressions."""
    delta = np.asarray(per["aligned"]["judge"]) - np.asarray(per["base"]["judge"])
    order = np.argsort(-delta)
    picks = list(order[: (k + 1) // 2]) + [i for i in order[::-1][: k // 2] if i not in order[: (k + 1) // 2]]
    return [
        {
            "id": records[i].id, "prompt": records[i].prompt, "base": base_texts[i], "aligned": aligned_texts[i],
            "judge_base": per["base"]["judge"][i], "judge_aligned": per["aligned"]["judge"][i], "delta": float(delta[i]),
            "outcome": float(win_outcomes([per["aligned"]["judge"][i]], [per["base"]["judge"][i]])[0]),
        }
        for i in picks
    ]
