"""`rlhf evaluate`: base vs aligned on held-out prompts, per prompt split, judged so that gibberish cannot win.

Phases: 1. resolve the run's settings (base, rollout sampling, system prompt, KL target) -> 2. per split,
sample both policies on the same prompts with the same seeds -> 3. KL to base with untruncated sampling at the
rollout temperature -> 4. score: gold judges, relevance and fluency (rlhf.judges), learned rewards, length,
EOS -> 5. paired bootstrap CIs, hacking check, verdict -> 6. summary.json + report.html.
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
import yaml

from rlhf.config import ConfigError, save_config
from rlhf.data import read_prompts, resolve_prompts, write_json, write_jsonl
from rlhf.evaluate.metrics import bootstrap_mean, paired_bootstrap, paired_bootstrap_distinct, win_rate
from rlhf.evaluate.verdict import VerdictRules, decide, hacking_check
from rlhf.generation import SampleOutput, SamplingConfig, decode_responses, encode_prompts, eos_ids
from rlhf.generator import generate
from rlhf.models.lora import merged_for_sampling
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm, resolve
from rlhf.reward.functions import RewardFunction, load_reward_function
from rlhf.scorers import get_scorer

log = logging.getLogger(__name__)

DEFAULT_SAMPLING = SamplingConfig(max_new_tokens=64, temperature=0.7)
RUN_CONFIGS = ("ppo.yaml", "grpo.yaml", "rloo.yaml", "dpo.yaml", "policy.yaml", "sft.yaml")


@dataclass(frozen=True)
class EvaluateConfig:
    aligned: str = "runs/ppo"
    """Aligned policy: a training run folder (adapter/ or policy/ + its ppo.yaml/dpo.yaml/...), a peft adapter
    folder, or a full model (folder/alias)."""
    base: str | None = None
    """Base policy; null = the `model` named in the run folder's config (else the default policy). A base
    other than the run's is refused: KL and fluency would be measured against the wrong model."""
    prompts: tuple[str, ...] = ("redteam", "helpful")
    """Prompt sets (built-in names or files); each is evaluated and reported as its own split."""
    split: str | None = "eval"
    """Keep only prompts of this split field (null = all)."""
    limit: int | None = None
    """Use only the first N prompts of each set."""
    out_dir: str = "runs/evaluate"
    """Output folder for completions, summary.json and report.html."""
    rewards: tuple[str, ...] = ()
    """Learned reward specs to report (e.g. rm:runs/demo/reward)."""
    scorers: tuple[str, ...] = ("toxicity", "sentiment")
    """Gold scorers to report."""
    judges: bool = True
    """Also judge relevance (MiniLM prompt-response similarity) and fluency (mean log-prob under the base)."""
    relevance_model: str = "all-minilm-l6-v2"
    """Sentence encoder of the relevance judge (mean-pooled last hidden states)."""
    judge: str = "scorer:toxicity"
    """Reward spec that decides the per-prompt win rate (higher reward wins)."""
    sampling: SamplingConfig | None = None
    """Sampling for both policies; null = the run's rollout sampling (from its config), else temperature 0.7,
    64 new tokens. KL is always measured with untruncated sampling at the rollout temperature."""
    system_prompt: str | None = None
    """System message; null = the one the run trained with (none without a run config); "" = none."""
    max_prompt_tokens: int | None = None
    """Prompts longer than this keep their last tokens; null = the run's setting, else 256."""
    batch_size: int = 32
    """Sequences per forward pass."""
    samples_per_prompt: int = 1
    """Completions per prompt and policy. A prompt's value of each metric is the mean over its samples, and the CIs
    resample prompts; more samples shrink the sampling noise in each paired difference, which one sample per prompt
    leaves too wide to see a halving of rare toxic answers on 40 prompts."""
    seed: int = 0
    """Sampling seed (the same for both policies, batch by batch)."""
    kl_target: float | None = None
    """KL target (nats per response) the hacking check and verdict compare with; null = the run's adaptive-KL
    target_kl when its config has one."""
    verdict: VerdictRules = field(default_factory=VerdictRules)
    """The rules of the verdict and of the hacking check (docs/evaluate.md)."""
    num_examples: int = 6
    """Side-by-side examples per split in the report, drawn at random with `seed` (not picked by score)."""

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):
            object.__setattr__(self, "prompts", (self.prompts,))
        if not self.prompts:
            raise ValueError("prompts: give at least one prompt set")
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}")


@dataclass
class PolicySamples:
    texts: list[str]
    lengths: list[int]
    finished: list[bool]
    outs: list[SampleOutput]


@dataclass
class EvaluationResult:
    summary: dict
    out_dir: Path
    report_path: Path
    hacking: dict


@dataclass(frozen=True)
class RunSettings:
    """What the aligned run was trained with, as far as its saved config says."""

    base: str
    sampling: SamplingConfig
    rollout_temperature: float
    system_prompt: str | None
    max_prompt_tokens: int
    kl_target: float | None
    config_file: str | None


@contextlib.contextmanager
def _adapter_disabled(model) -> Iterator[None]:
    with model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext():
        yield


def _run_config(aligned: str) -> tuple[dict, Path | None]:
    path = Path(aligned)
    for folder in (path, path.parent):
        for name in RUN_CONFIGS:
            if (folder / name).is_file():
                return yaml.safe_load((folder / name).read_text()) or {}, folder / name
    return {}, None


def run_settings(cfg: EvaluateConfig, check_base: bool = True) -> RunSettings:
    """Resolve base, sampling, system prompt and KL target from the config and the run folder's saved config.

    `check_base=False` when the caller passes the policies itself and so chooses the base on purpose (e.g. the
    constitutional chain compares with the model before SFT, not with PPO's starting point).
    """
    run, path = _run_config(cfg.aligned)
    run_base = run.get("model")
    if check_base and cfg.base and run_base and resolve(cfg.base) != resolve(run_base):
        raise ConfigError(f"base: {cfg.aligned} was trained from {run_base!r} ({path}), not {cfg.base!r}; KL and fluency "
                          "must be measured against the run's own base. Leave base unset.")
    rs = run.get("sampling") or {}
    rollout = SamplingConfig(**{k: rs[k] for k in ("max_new_tokens", "temperature", "top_p", "top_k") if k in rs}) if rs else None
    sampling = cfg.sampling or rollout or DEFAULT_SAMPLING
    temp = rollout.temperature if rollout else (sampling.temperature if sampling.temperature > 0 else 1.0)
    system = cfg.system_prompt if cfg.system_prompt is not None else run.get("system_prompt")
    kl_target = cfg.kl_target
    if kl_target is None and run.get("adaptive_kl") and run.get("target_kl"):
        kl_target = float(run["target_kl"])
    return RunSettings(
        base=cfg.base or run_base or DEFAULT_POLICY, sampling=sampling, rollout_temperature=temp,
        system_prompt=system or None, max_prompt_tokens=cfg.max_prompt_tokens or run.get("max_prompt_tokens") or 256,
        kl_target=kl_target, config_file=str(path) if path else None,
    )


def load_policies(cfg: EvaluateConfig, base_name: str | None = None):
    """(aligned, base, tokenizer). With a LoRA adapter, `base` is None: the same model with the adapter off."""
    from rlhf.models.lora import load_adapter

    base_name = base_name or run_settings(cfg).base
    path = Path(cfg.aligned)
    adapter = path / "adapter" if (path / "adapter" / "adapter_config.json").exists() else path
    if (adapter / "adapter_config.json").exists():
        base, tok = load_causal_lm(base_name)
        return load_adapter(base, adapter, merge=False), None, tok
    full = path / "policy" if (path / "policy").is_dir() else path
    aligned, tok = load_causal_lm(full if full.exists() else cfg.aligned)
    base, _ = load_causal_lm(base_name)
    return aligned, base, tok


def sample_policy(model, tok, prompts: list[str], sampling: SamplingConfig, rs: RunSettings, batch_size: int,
                  seed: int, on_batch=None, with_logprobs: bool = False) -> PolicySamples:
    """`with_logprobs`: keep each drawn token's log-prob from the sampler (unfiltered, at the sampling temperature);
    the draws are the same either way."""
    outs, texts = [], []
    eos = eos_ids(tok, model)
    for i in range(0, len(prompts), batch_size):
        ids, mask = encode_prompts(tok, prompts[i : i + batch_size], rs.max_prompt_tokens, rs.system_prompt)
        out = generate(model, ids, mask, sampling, eos, tok.pad_token_id, torch.Generator().manual_seed(seed + i),
                       with_logprobs)
        outs.append(out)
        texts += decode_responses(tok, out)
        if on_batch:
            on_batch()
    return PolicySamples(texts, [n for o in outs for n in o.response_lengths.tolist()],
                         [f for o in outs for f in o.finished.tolist()], outs)


@torch.inference_mode()
def _logprobs(model, out: SampleOutput, *temperatures: float) -> list[torch.Tensor]:
    """Per-token log-probs of the sampled responses, (B, T) per temperature, from one trunk forward. The training
    path's trunk + head: a frozen head never holds the (B, T, V) logits (rlhf.models.fused)."""
    from rlhf.models.policy import response_hidden, response_logprobs

    hidden = response_hidden(model, out.sequences, out.attention_mask, out.prompt_len)  # (B, T, H)
    return [response_logprobs(model, hidden, out.responses, t)[0] * out.response_mask for t in temperatures]


def kl_and_base_logprobs(aligned, base, outs: list[SampleOutput], temperature: float,
                         base_logprobs: bool = True) -> tuple[list[float], list[torch.Tensor]]:
    """Monte-Carlo KL(aligned || base) per sequence: sum over tokens of log p_aligned - log p_base (k1); and, with
    `base_logprobs`, the base's (B, T) log-probs of the same tokens at temperature 1 (the fluency judge's numbers),
    from the same base forward (else an empty list).

    Unbiased only when `outs` were sampled from the aligned policy without truncation at `temperature`. The aligned
    log-probs come from the sampler when it kept them (the same numbers up to float rounding, as PPO's old log-probs
    do), which saves a forward pass; the base's always take one.
    """
    kls, base_lps = [], []
    for out in outs:
        lp = out.logprobs if out.logprobs is not None else _logprobs(aligned, out, temperature)[0]
        with _adapter_disabled(aligned) if base is None else contextlib.nullcontext():
            ref, *ref1 = _logprobs(base if base is not None else aligned, out, temperature, *([1.0] if base_logprobs else []))
        kls += (lp - ref).sum(-1).tolist()
        base_lps += ref1
    return kls, base_lps


def sequence_kl(aligned, base, outs: list[SampleOutput], temperature: float) -> list[float]:
    """Per-sequence KL(aligned || base) of `kl_and_base_logprobs`."""
    return kl_and_base_logprobs(aligned, base, outs, temperature, base_logprobs=False)[0]


def as_sampled(outs: list[SampleOutput], logprobs: list[torch.Tensor]) -> list[tuple[list[int], list[float]]]:
    """Per row: its response ids without the EOS and their log-probs (`FluencyJudge`'s `sampled`)."""
    rows = []
    for out, lp in zip(outs, logprobs):
        for ids, lps, n in zip(out.responses.tolist(), lp.tolist(), (out.response_lengths - out.finished.long()).tolist()):
            rows.append((ids[:n], lps[:n]))
    return rows


def _untruncated(s: SamplingConfig) -> bool:
    return s.temperature > 0 and s.top_p >= 1.0 and s.top_k == 0


def run_evaluate(
    cfg: EvaluateConfig,
    policies: tuple | None = None,
    extra_sections: dict | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationResult:
    """Evaluate base vs aligned per prompt split. `policies` = (aligned, base_or_None, tokenizer) skips loading."""
    from rlhf.evaluate.report import write_report

    t0 = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "evaluate.yaml")
    # 1. the run's settings
    rs = run_settings(cfg, check_base=policies is None)
    splits = {_split_name(spec): read_prompts(resolve_prompts(spec), split=cfg.split)[: cfg.limit] for spec in cfg.prompts}
    aligned, base, tok = policies or load_policies(cfg, rs.base)
    base_lm = base if base is not None else aligned
    rewards = {spec: load_reward_function(spec) for spec in cfg.rewards}
    win_judge = rewards.get(cfg.judge) or load_reward_function(cfg.judge)
    scorers = {name: get_scorer(name) for name in cfg.scorers}
    judges = None
    if cfg.judges:
        from rlhf.judges import FluencyJudge, RelevanceJudge

        judges = RelevanceJudge(cfg.relevance_model), FluencyJudge(base_lm, tok, rs.system_prompt, max_prompt_tokens=rs.max_prompt_tokens)
    kl_sampling = SamplingConfig(max_new_tokens=rs.sampling.max_new_tokens, temperature=rs.rollout_temperature)
    separate_kl = not (_untruncated(rs.sampling) and rs.sampling.temperature == rs.rollout_temperature)
    k = cfg.samples_per_prompt
    total = sum(-(-len(r) * k // cfg.batch_size) for r in splits.values()) * (3 if separate_kl else 2)
    done = [0]

    def tick(stage: str):
        def f():
            done[0] += 1
            if on_progress:
                on_progress(stage, done[0], total)
        return f

    per: dict[str, dict[str, dict[str, list]]] = {}
    texts: dict[str, dict[str, list[str]]] = {}
    for split, records in splits.items():
        prompts = [p.prompt for p in records for _ in range(k)]  # k rows per prompt, side by side
        # 2. sample both policies with the same seeds (the base's own log-probs are its samples' fluency)
        with _adapter_disabled(aligned) if base is None else contextlib.nullcontext():
            b = sample_policy(base_lm, tok, prompts, rs.sampling, rs, cfg.batch_size, cfg.seed, tick(f"sampling base ({split})"),
                              with_logprobs=True)
        with merged_for_sampling(aligned):  # plain matmuls: decode is latency-bound on CPU
            a = sample_policy(aligned, tok, prompts, rs.sampling, rs, cfg.batch_size, cfg.seed, tick(f"sampling aligned ({split})"),
                              with_logprobs=not separate_kl)
        # 3. KL to base, on untruncated samples of the aligned policy at the rollout temperature; the base's forward
        # on the aligned samples also gives their fluency when they are those samples
        if separate_kl:
            with merged_for_sampling(aligned):
                kl_s = sample_policy(aligned, tok, prompts, kl_sampling, rs, cfg.batch_size, cfg.seed + 7919, tick(f"KL samples ({split})"),
                                     with_logprobs=True)
            kls, known = sequence_kl(aligned, base, kl_s.outs, rs.rollout_temperature), {"aligned": None}
        else:
            kls, base_lps = kl_and_base_logprobs(aligned, base, a.outs, rs.rollout_temperature, judges is not None)
            known = {"aligned": as_sampled(a.outs, base_lps) if base_lps else None}
        greedy = any(o.raw_logprobs is None for o in b.outs)
        known["base"] = None if greedy else as_sampled(b.outs, [o.raw_logprobs for o in b.outs])
        # 4. score
        if on_progress:
            on_progress(f"scoring ({split})", done[0], total)
        per[split] = {}
        for name, s in (("base", b), ("aligned", a)):
            per[split][name] = _score(rewards, scorers, prompts, s, cfg.batch_size)
            per[split][name]["judge"] = win_judge(prompts, s.texts).tolist()
            if judges is not None:
                with _adapter_disabled(aligned) if base is None else contextlib.nullcontext():
                    per[split][name] |= {"relevance": judges[0](prompts, s.texts),
                                         "fluency": judges[1](prompts, s.texts, known[name])}
        texts[split] = {"base": b.texts, "aligned": a.texts}
        per[split]["aligned"]["kl"] = kls
    # 5. metrics, hacking check, verdict
    summary = summarize(cfg, rs, splits, per, texts, scorers, separate_kl)
    summary["seconds"] = time.perf_counter() - t0
    hacking = hacking_check(summary, cfg.verdict)
    summary["reward_hacking"] = hacking
    summary["verdict"] = decide(summary, cfg.verdict, hacking)
    for name in ("base", "aligned"):
        write_jsonl(out_dir / f"completions_{name}.jsonl", [
            {"id": r.id, "split": split, "sample": j, "prompt": r.prompt, "completion": texts[split][name][i * k + j],
             **{m: v[i * k + j] for m, v in per[split][name].items()}}
            for split, records in splits.items() for i, r in enumerate(records) for j in range(k)
        ])
    write_json(out_dir / "summary.json", summary)
    # 6. report
    report = write_report(out_dir, summary, per, extra_sections or {})
    return EvaluationResult(summary, out_dir, report, hacking)


def _split_name(spec: str) -> str:
    return Path(spec).name.split(".")[0] if ("/" in spec or "." in spec) else spec


def _score(rewards: dict[str, RewardFunction], scorers: dict, prompts: list[str], s: PolicySamples, batch: int) -> dict[str, list]:
    scores: dict[str, list] = {}
    for name, fn in rewards.items():
        vals: list[float] = []
        for i in range(0, len(s.texts), batch):
            vals += fn(prompts[i : i + batch], s.texts[i : i + batch]).tolist()
        scores[name] = vals
    for name, sc in scorers.items():
        scores[name] = sc.score(s.texts)
    scores["response_length"] = [float(n) for n in s.lengths]
    scores["eos_rate"] = [float(f) for f in s.finished]
    return scores


KINDS = {"relevance": "judge", "fluency": "judge", "response_length": "shape", "eos_rate": "shape"}


def summarize(cfg: EvaluateConfig, rs: RunSettings, splits: dict, per: dict, texts: dict, scorers: dict,
              separate_kl: bool) -> dict:
    """summary.json: per split, each metric's base and aligned means with the paired bootstrap CI of the difference."""
    higher = {name: sc.higher_is_better for name, sc in scorers.items()}
    k = cfg.samples_per_prompt
    out_splits = {}
    for split, records in splits.items():
        # per-row lists (k rows per prompt) -> one mean per prompt, the unit every CI resamples
        pp = {pol: {m: per_prompt(v, k) for m, v in per[split][pol].items()} for pol in ("base", "aligned")}
        metrics = {}
        for name, base_vals in pp["base"].items():
            if name in ("judge", "kl"):
                continue
            kind = "gold" if name in scorers else "learned" if name in cfg.rewards else KINDS.get(name, "other")
            pd = paired_bootstrap(pp["aligned"][name], base_vals, seed=cfg.seed)
            metrics[name] = pd.as_dict() | {"higher_is_better": higher.get(name, True), "kind": kind}
        for n in (1, 2):
            pd = paired_bootstrap_distinct(texts[split]["aligned"], texts[split]["base"], n, seed=cfg.seed, group=k)
            metrics[f"distinct_{n}"] = pd.as_dict() | {"higher_is_better": True, "kind": "shape"}
        wr = win_rate(pp["aligned"]["judge"], pp["base"]["judge"], seed=cfg.seed)
        first = {pol: v[::k] for pol, v in texts[split].items()}  # each prompt's first sample, for the examples
        firsts = {pol: {m: v[::k] for m, v in per[split][pol].items()} for pol in ("base", "aligned")}
        out_splits[split] = {
            "num_prompts": len(records), "samples_per_prompt": k, "metrics": metrics, "win_rate": wr.as_dict(),
            "kl": bootstrap_mean(pp["aligned"]["kl"], seed=cfg.seed).as_dict(),
            "examples": pick_examples(records, first, firsts, cfg.num_examples, cfg.seed),
        }
    kl_prompts = [x for split in splits for x in per_prompt(per[split]["aligned"]["kl"], k)]
    kl = bootstrap_mean(kl_prompts, seed=cfg.seed).as_dict() | {"target": rs.kl_target}
    target = cfg.verdict.target_split if cfg.verdict.target_split in out_splits else next(iter(out_splits))
    tgt = out_splits[target]["metrics"].get(cfg.verdict.target_metric, {})
    return {
        "num_prompts": sum(len(r) for r in splits.values()),
        "splits": out_splits,
        "kl": kl,
        "judge": cfg.judge,
        "learned_rewards": list(cfg.rewards),
        "settings": {
            "aligned": cfg.aligned, "base": rs.base, "seed": cfg.seed, "run_config": rs.config_file, "sampling": vars(rs.sampling),
            "system_prompt": rs.system_prompt, "rollout_temperature": rs.rollout_temperature, "samples_per_prompt": k,
            "kl_samples": "separate untruncated samples" if separate_kl else "the evaluation samples",
            "kl_target": rs.kl_target, "verdict_rules": {k: getattr(cfg.verdict, k) for k in cfg.verdict.__dataclass_fields__},
        },
        # headline figures of the target split, for callers that want one number
        "target": {"metric": cfg.verdict.target_metric, "split": target},
        "toxicity_before": out_splits[target]["metrics"].get("toxicity", {}).get("base"),
        "toxicity_after": out_splits[target]["metrics"].get("toxicity", {}).get("aligned"),
        "target_change": tgt.get("diff"),
        "win_rate": out_splits[target]["win_rate"],
    }


def per_prompt(values: list, k: int) -> list[float]:
    """Rows laid out k per prompt (prompt-major) -> the mean of each prompt's k rows."""
    if len(values) % k:
        raise ValueError(f"{len(values)} rows are not {k} per prompt")
    return np.asarray(values, dtype=float).reshape(-1, k).mean(axis=1).tolist() if k > 1 else list(values)


def pick_examples(records, texts: dict, per: dict, k: int, seed: int) -> list[dict]:
    """k side-by-side examples drawn at random with `seed` (never chosen by their scores)."""
    n = len(records)
    idx = sorted(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False).tolist()) if n else []
    keys = [key for key in ("toxicity", "relevance", "fluency") if key in per["base"]]
    return [
        {"id": records[i].id, "prompt": records[i].prompt, "base": texts["base"][i], "aligned": texts["aligned"][i],
         "scores": {key: {"base": per["base"][key][i], "aligned": per["aligned"][key][i]} for key in keys}}
        for i in idx
    ]
