"""Base vs aligned policy on real dialogues: DialogSum test set, "Summarize the following conversation."

Runs `rlhf evaluate` on DialogSum dialogues (../shared/data/dialogsum.test.jsonl.gz, CC BY-NC-SA; read
here, never copied into the project), as in the design notes' summarisation lab, then reports the mean
toxicity before and after and how far summary quality moved: ROUGE-L F1 (rouge-score, stemmed)
against the human reference summaries (the best of the three per dialogue, `score_multi`).

    make demo                                                     # produces runs/demo/ppo (the aligned policy)
    flock /tmp/rlhf-bench.lock .venv/bin/python bench/eval_dialogsum.py               # 100 dialogues, ~5 min
    flock /tmp/rlhf-bench.lock .venv/bin/python bench/eval_dialogsum.py --aligned runs/ppo --limit 500
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from rouge_score import rouge_scorer

from rlhf.config import load_config
from rlhf.data import read_records, write_jsonl
from rlhf.evaluate.run import EvaluateConfig, run_evaluate
from rlhf.evaluate.metrics import bootstrap_mean, paired_bootstrap

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dialogsum.test.jsonl.gz"
INSTRUCTION = "Summarize the following conversation."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aligned", default="runs/demo/ppo", help="aligned policy: a `rlhf ppo` folder or adapter")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=100, help="first N dialogues")
    ap.add_argument("--out", default="runs/bench_dialogsum")
    ap.add_argument("--set", "-s", action="append", default=[], help="EvaluateConfig override key=value (repeatable)")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (this benchmark needs ../shared/data)")
    if not Path(args.aligned).exists():
        sys.exit(f"{args.aligned}: no aligned policy there; run `make demo` first or pass --aligned")

    with gzip.open(args.data, "rt") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(args.limit))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts_file = out / "prompts.jsonl"
    write_jsonl(prompts_file, [
        {"id": r["fname"], "prompt": f"{INSTRUCTION}\n\n{r['dialogue']}"} for r in rows
    ])
    # Greedy decoding: summaries are judged against fixed references, so sampling noise only blurs ROUGE.
    # The run's base and system prompt (from its ppo.yaml); dialogues need a longer prompt budget than chats.
    cfg = load_config(EvaluateConfig, None, [
        f"aligned={args.aligned}", f"prompts={prompts_file}", "split=null", f"out_dir={out}",
        "sampling.temperature=0", "sampling.max_new_tokens=64", "batch_size=16", "judge=scorer:toxicity",
        "max_prompt_tokens=512", "judges=false", "scorers=[toxicity]", *args.set,
    ])
    res = run_evaluate(cfg)

    # The test split has three human summaries per dialogue (summary1..3), the dev split one (summary).
    refs = {r["fname"]: [r[k] for k in ("summary", "summary1", "summary2", "summary3") if r.get(k)] for r in rows}
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    per = {}
    for name in ("base", "aligned"):
        comp = [rec for _, rec in read_records(out / f"completions_{name}.jsonl")]
        per[name] = {
            "rougeL": [rouge.score_multi(refs[c["id"]], c["completion"])["rougeL"].fmeasure for c in comp],
            "toxicity": [c["toxicity"] for c in comp],
        }
    split = res.summary["splits"]["prompts"]
    m = split["metrics"]
    print()
    print(f"machine: {machine(f'torch {torch.__version__}', f'{torch.get_num_threads()} threads')}")
    print(f"DialogSum test, first {len(rows)} dialogues; base {res.summary['settings']['base']} vs aligned {cfg.aligned}; "
          f"greedy, {cfg.sampling.max_new_tokens} new tokens; system prompt {res.summary['settings']['system_prompt']!r}; "
          f"{res.summary['seconds']:.0f} s")
    print(f"{'':>10} {'toxicity (mean p)':>18} {'ROUGE-L F1':>11} {'95% CI':>17} {'length':>7}")
    for name in ("base", "aligned"):
        est = bootstrap_mean(per[name]["rougeL"])
        print(f"{name:>10} {np.mean(per[name]['toxicity']):>18.4f} {est.value:>11.4f} "
              f"{f'[{est.low:.4f}, {est.high:.4f}]':>17} {m['response_length'][name]:>7.1f}")
    rouge = paired_bootstrap(per["aligned"]["rougeL"], per["base"]["rougeL"])
    tox = paired_bootstrap(per["aligned"]["toxicity"], per["base"]["toxicity"])
    print(f"ROUGE-L change (aligned - base, paired): {rouge.diff.value:+.4f}  95% CI [{rouge.diff.low:+.4f}, "
          f"{rouge.diff.high:+.4f}]; relative {rouge.relative.value:+.1%} [{rouge.relative.low:+.1%}, {rouge.relative.high:+.1%}]"
          f" -> {'within' if rouge.relative.value >= -0.10 else 'NOT within'} 10% of base")
    print(f"toxicity change (aligned - base, paired): {tox.diff.value:+.4f}  95% CI [{tox.diff.low:+.4f}, {tox.diff.high:+.4f}]"
          f" -> {'not higher' if tox.diff.value <= 0 else 'higher'}")
    print(f"KL(aligned || base): {res.summary['kl']['value']:.2f} nats per response ({res.summary['settings']['kl_samples']}, "
          f"T={res.summary['settings']['rollout_temperature']}); report: {res.report_path}")


if __name__ == "__main__":
    main()
