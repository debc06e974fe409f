"""Per-user adapters alone: does each user's RL update move the policy toward that user's taste?

bench/personalize.py runs the whole loop through the HTTP chat API in hours; its policy figures rest on one draw of
each update. This bench isolates the update, as bench/personal_reward.py isolates the reward: the base answers the
helpful train prompts twice (cached, the chat page's settings), each simulated user of bench/_personal_eval.py
chooses A or B on `--choices` of them by their gold function, `train_shared` + `fit_user_part` give each user's
reward (`rm-user:...`), and `rlhf personalize`'s own `train_user_adapter` trains each user's adapter with every
optimizer in `--optimizers`, on the user's own prompts. Then the chat server's `ChatService` (one base, users'
adapters mixed per request) answers the held-out helpful prompts (eval split, never chosen on) `--samples` times
with the base and every adapter, at the same seed, and each adapter is compared with the base by its user's gold
(paired by prompt and sample: a bootstrap CI), with KL to the base and fluency under the base.

    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/personal_policy.py                    # stages resume
    .venv/bin/python bench/personal_policy.py --model /tmp/tiny_lm --prompts 12 --choices 8 --steps 1 \\
        --eval-prompts 4 --max-new-tokens 16   # a smoke run (tests/tiny.py's save_tiny_lm)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _personal_eval import TASTES, est, fluency_and_kl, fluency_vs, fmt, within_bounds
from personal_reward import draw, replies

from rlhf.data import read_prompts, resolve_prompts, write_json
from rlhf.models.registry import load_causal_lm
from rlhf.personalize.config import ChatConfig, PersonalizeConfig, PersonalRewardConfig
from rlhf.personalize.data import user_key
from rlhf.personalize.layout import adapter_fingerprint
from rlhf.personalize.reward import PersonalReward, fit_user_part, save_user_part, train_shared
from rlhf.personalize.serving import AdapterRef, ChatService, ReplyRequest
from rlhf.personalize.train import train_user_adapter
from rlhf.types import Prompt

log = logging.getLogger("bench.personal_policy")


def reward(args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Train the shared part on everyone's choices and each user's part; save them as `rlhf personalize` does."""
    folder = out / "reward"
    users = draw(replies(args, out), args.choices, 0, args.seed)
    if not (folder / "done.json").exists():
        model = train_shared(users, PersonalRewardConfig(trunk=args.model, seed=args.seed), 1)
        model.save(folder)
        for u in users.values():
            save_user_part(folder, fit_user_part(model, u, PersonalRewardConfig().user_prior))
        write_json(folder / "done.json", {"users": {u.name: len(u.pairs) for u in users.values()}})
    return {u.name: {"id": uid, "pairs": len(u.pairs),
                     "prompts": list(dict.fromkeys(p.prompt for p in u.pairs))} for uid, u in users.items()}


def train(args: argparse.Namespace, out: Path, optimizer: str, name: str, user: dict) -> dict:
    """One user's adapter with `optimizer` (skipped when done before)."""
    run = out / optimizer / name
    if (run / "done.json").exists():
        return json.loads((run / "done.json").read_text())
    base = getattr(PersonalizeConfig(), optimizer)
    opt = dataclasses.replace(base, **({"max_steps": args.steps} if args.steps else {}), seed=args.seed,
                              sampling=dataclasses.replace(base.sampling, max_new_tokens=args.max_new_tokens,
                                                           temperature=args.temperature))
    cfg = PersonalizeConfig(model=args.model, system_prompt=args.system, threads=args.threads, optimizer=optimizer,
                            **{optimizer: opt})
    key = user_key(user["id"])
    model, tok = load_causal_lm(args.model)
    t0 = time.perf_counter()
    res = train_user_adapter(cfg, PersonalReward(out / "reward", key), model, tok,
                             [Prompt(f"p{i}", p) for i, p in enumerate(user["prompts"])], run,
                             f"rm-user:{out / 'reward'}:{key}",
                             lambda m: log.info("  %s %s step %d: reward %.3f KL %.2f len %.0f (%.0f s)", optimizer, name,
                                                m["step"], m["reward/raw_mean"], m["kl/mean"],
                                                m["response/length_mean"], m["time/step"]))
    h = res.history
    done = {"steps": res.steps, "stop_reason": res.stop_reason, "minutes": (time.perf_counter() - t0) / 60,
            "reward_first": h[0]["reward/raw_mean"], "reward_last": h[-1]["reward/raw_mean"],
            "kl_last": h[-1]["kl/mean"], "length_last": h[-1]["response/length_mean"],
            "adapter": str(res.policy_dir.relative_to(out)), "target_kl": opt.target_kl}
    write_json(run / "done.json", done)
    return done


def evaluate(args: argparse.Namespace, out: Path, adapters: dict[str, str]) -> dict:
    """Base and every adapter on the held-out prompts, `--samples` replies each, one ChatService, the same seed."""
    prompts = [p.prompt for p in read_prompts(resolve_prompts("helpful"), split="eval")][: args.eval_prompts]
    refs = {label: AdapterRef(label.replace("/", "_"), 1, path, adapter_fingerprint(None))
            for label, path in adapters.items()}
    chat = ChatService(ChatConfig(model=args.model, personal_dir=str(out), max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature, system_prompt=args.system, threads=args.threads,
                                  max_batch=32, max_loaded_adapters=len(refs) + 1, max_queue=100_000), seed=args.seed)
    msgs = [({"role": "user", "content": p},) for p in prompts]
    policies: dict[str, AdapterRef | None] = {"base": None} | refs
    futures = {(label, i): chat.submit(ReplyRequest(m, args.samples, args.max_new_tokens, ref))
               for i, m in enumerate(msgs) for label, ref in policies.items()}
    got = {label: [futures[(label, i)].result() for i in range(len(msgs))] for label in policies}
    chat.close()
    texts = {label: [t for r in rs for t in r.texts] for label, rs in got.items()}  # (prompt, sample) order
    with open(out / "eval.jsonl", "w") as fh:
        for i, p in enumerate(prompts):
            fh.write(json.dumps({"prompt": p} | {label: got[label][i].texts for label in policies}) + "\n")
    system = [{"role": "system", "content": args.system}] if args.system else []
    flat_msgs = [system + list(m) for m in msgs for _ in range(args.samples)]
    lm = fluency_and_kl(args.model, None, {label: out / path for label, path in adapters.items()},
                        {label: [ids for r in rs for ids in r.ids] for label, rs in got.items()}, flat_msgs,
                        args.temperature)
    res: dict = {"prompts": len(prompts), "samples": args.samples, "base": lm["base"],
                 "base_gold": {t: est([TASTES[t].gold(x) for x in texts["base"]]) for t in TASTES}, "adapters": {}}
    for label in adapters:
        g = TASTES[label.split("/")[1]].gold
        diff = [g(a) - g(b) for a, b in zip(texts[label], texts["base"])]
        res["adapters"][label] = lm[label] | {
            "gold": est([g(x) for x in texts[label]]), "gold_diff": est(diff),
            "win_rate": est([1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diff]),
            "fluency_vs_base": fluency_vs(lm[label]["fluency_values"], lm["base"]["fluency_values"], args.samples),
            "finished": float(np.mean([f for r in got[label] for f in r.finished])),
            "gold_other_tastes": {t: est([TASTES[t].gold(x) for x in texts[label]])["mean"] for t in TASTES}}
    res["base"]["finished"] = float(np.mean([f for r in got["base"] for f in r.finished]))
    return res


def repetition(texts: list[str]) -> tuple[float, float]:
    """(mean distinct-2, share of replies repeating one word 4-gram 3+ times): degenerate text that a gold can like."""
    d2, rep = [], []
    for t in texts:
        w = t.split()
        bigrams = list(zip(w, w[1:]))
        d2.append(len(set(bigrams)) / max(1, len(bigrams)))
        rep.append(max(Counter(zip(w, w[1:], w[2:], w[3:])).values(), default=0) >= 3)
    return float(np.mean(d2)), float(np.mean(rep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_personal_policy")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--optimizers", default="rloo,ppo", help="comma-separated: rloo, ppo, grpo")
    ap.add_argument("--steps", type=int, default=None, help="RL steps per user (default: PersonalizeConfig's)")
    ap.add_argument("--prompts", type=int, default=160, help="helpful train prompts answered (the split has 160)")
    ap.add_argument("--choices", type=int, default=60, help="A/B choices per user")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="reply cap, for the choices, the RL and the eval")
    ap.add_argument("--system", default="You are a helpful assistant. Keep your answers short.")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--eval-prompts", type=int, default=40)
    ap.add_argument("--samples", type=int, default=2, help="replies per held-out prompt and policy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", default=None, help="comma-separated simulated users to train and evaluate (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("rlhf").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "bench_args.json"
    keep = ("model", "prompts", "choices", "max_new_tokens", "system", "temperature", "seed", "steps")
    if saved.exists() and any(json.loads(saved.read_text()).get(k) != getattr(args, k) for k in keep):
        raise SystemExit(f"{out} holds a run with other settings ({saved}); use another --out")
    write_json(saved, vars(args))
    random.seed(args.seed)

    t0 = time.perf_counter()
    users = reward(args, out)
    wanted = set(args.users.split(",")) if args.users else set(users)
    if unknown := wanted - set(users):
        raise SystemExit(f"--users: no simulated user {sorted(unknown)}; they are {sorted(users)}")
    trained = {}
    for optimizer in args.optimizers.split(","):
        for name, user in users.items():
            # no prompts: rlhf personalize's min_pairs; a smoke run's tiny draws can leave a user none
            if user["prompts"] and name in wanted:
                trained[f"{optimizer}/{name}"] = train(args, out, optimizer, name, user)
    done = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    if done is not None and set(done["trained"]) == set(trained) and done["args"]["samples"] == args.samples:
        ev, minutes = done["eval"], done["minutes"]  # evaluated before: only the report is printed again
    else:
        ev = evaluate(args, out, {label: t["adapter"] for label, t in trained.items()})
        minutes = (time.perf_counter() - t0) / 60
        write_json(out / "summary.json", {"args": vars(args), "users": {n: u["pairs"] for n, u in users.items()},
                                          "trained": trained, "eval": ev, "minutes": minutes})
    rows = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    rep = {label: repetition([t for r in rows for t in r[label]]) for label in ["base", *trained]}

    print(f"machine: {machine(f'torch {torch.__version__}', f'{args.threads} threads')}")
    print(f"{len(users)} users x {args.choices} A/B choices on the base's replies (<= {args.max_new_tokens} tokens, "
          f"T={args.temperature}), 25% held out; train pairs: "
          + ", ".join(f"{n} {u['pairs']}" for n, u in users.items()))
    print(f"held-out: {ev['prompts']} helpful eval prompts x {ev['samples']} replies; base fluency "
          f"{fmt(ev['base']['fluency'])}, {ev['base']['finished']:.0%} end before the cap, distinct-2 "
          f"{rep['base'][0]:.2f}, {rep['base'][1]:.0%} repeat a 4-gram 3+ times")
    print(f"{'adapter':16s} {'steps':>5s} {'min':>5s} {'reward first->last':>19s} {'own gold: adapter':>18s} "
          f"{'base':>8s} {'paired diff':>22s} {'win rate':>15s} {'KL to base':>18s} {'fluency':>20s} {'ends':>5s} "
          f"{'dist-2':>6s} {'repeats':>7s}  {'fluency vs base':>22s}  demo's bounds")
    for label, e in ev["adapters"].items():
        t, g = trained[label], TASTES[label.split("/")[1]]
        target = t.get("target_kl", getattr(PersonalizeConfig(), label.split("/")[0]).target_kl)  # older runs: the default
        print(f"{label:16s} {t['steps']:5d} {t['minutes']:5.1f} {t['reward_first']:8.3f} -> {t['reward_last']:6.3f} "
              f"{e['gold']['mean']:18.1f} {ev['base_gold'][g.name]['mean']:8.1f} {fmt(e['gold_diff'], digits=1):>22s} "
              f"{fmt(e['win_rate'], pct=True):>15s} {fmt(e['kl_to_shared'], digits=1):>18s} {fmt(e['fluency']):>20s} "
              f"{e['finished']:5.0%} {rep[label][0]:6.2f} {rep[label][1]:7.0%}  "
              f"{fmt(e['fluency_vs_base']['relative'], pct=True) if 'fluency_vs_base' in e else 'n/a':>22s}  "
              f"{within_bounds(e['kl_to_shared'], e.get('fluency_vs_base'), target)}")
    print("gold: " + "; ".join(f"{n} {t.statement}" for n, t in TASTES.items()))
    print(f"total {minutes:.1f} min (this run's stages; stages done before are not counted)")


if __name__ == "__main__":
    main()
