"""The per-user reward alone, in minutes: simulated users' A/B choices over the base policy's own replies.

bench/personalize.py measures the whole loop (chat server, `rlhf personalize`, PPO, serving) in about 100 minutes;
its reward figure rests on one draw of 22-44 held-out choices. This bench isolates the reward: the base policy
answers every helpful train prompt twice (the chat page's settings: its system prompt, T = 0.7, 96 tokens); each
simulated user of bench/_personal_eval.py draws `--choices` prompts and picks A or B by their gold function with
the same Bradley-Terry noise; 25% of each user's choices are held out. `train_shared` + `fit_user_part` (the code
`rlhf personalize` runs) then score the held-out choices. This repeats `--repeats` times with new draws, and each
variant of the reward settings is scored on the same draws, so variants compare paired.

Trunk states are computed once per (prompt, reply) and layer and reused by every variant and repeat.

    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/personal_reward.py
    .venv/bin/python bench/personal_reward.py --model /tmp/tiny_lm --prompts 12 --choices 8 --repeats 2  # a smoke run
    (a tiny random LM: tests/tiny.py's save_tiny_lm(Path("/tmp/tiny_lm")))
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _personal_eval import TASTES, choose, est, fmt

from rlhf.data import read_prompts, resolve_prompts
from rlhf.generation import SamplingConfig, generate_completions
from rlhf.models.registry import load_causal_lm
from rlhf.personalize.config import PersonalRewardConfig
from rlhf.personalize.data import UserFeedback
from rlhf.personalize.reward import PersonalRewardModel, fit_user_part, pool, train_shared
from rlhf.reward.data import length_grouped_batches
from rlhf.types import PreferencePair

log = logging.getLogger("bench.personal_reward")
EVAL_FRACTION = 0.25

# name -> settings changed from PersonalRewardConfig's defaults
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "depth 0.25": {"depth": 0.25},
    "depth 0.75": {"depth": 0.75},
    "depth 1.0": {"depth": 1.0},
    "mean pooling": {"pooling": "mean"},
    "last token": {"pooling": "last"},
    "rank 2": {"rank": 2},
    "rank 8": {"rank": 8},
    "basis_l2 0.1": {"basis_l2": 0.1},
    "basis_l2 10": {"basis_l2": 10.0},
    "user_prior 0.1": {"user_prior": 0.1},
    "user_prior 10": {"user_prior": 10.0},
}


# ------------------------------------------------------------------------------------ replies and choices


def replies(args: argparse.Namespace, out: Path) -> list[dict]:
    """Two base replies per helpful train prompt (cached in `out`, per generation settings)."""
    key = {k: getattr(args, k) for k in ("model", "prompts", "max_new_tokens", "system", "temperature", "seed")}
    path = out / f"replies-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}.jsonl"
    if path.exists():
        return [json.loads(x) for x in path.read_text().splitlines()]
    prompts = read_prompts(resolve_prompts("helpful"), split="train")[: args.prompts]
    lm, tok = load_causal_lm(args.model)
    rows: list[dict] = []
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=1.0)
    stats = generate_completions(lm, tok, prompts, sampling, num_completions=2, batch_size=32, seed=args.seed,
                                 system=args.system,
                                 on_batch=lambda recs, _: rows.extend(
                                     {"prompt": r.prompt, "a": r.completions[0], "b": r.completions[1],
                                      "finished": r.metadata["finished"]} for r in recs))
    log.info("replies: %d prompts, %.0f tokens/s", len(rows), stats.tokens_per_s)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def draw(rows: list[dict], n: int, repeat: int, seed: int) -> dict[str, UserFeedback]:
    """Each user's choices on `n` prompts of their own, 25% held out; ties give no pair (as in the chat)."""
    users = {}
    for uid, (name, taste) in enumerate(TASTES.items(), start=1):
        rng = random.Random(f"{seed}:{repeat}:{name}")
        u = UserFeedback(uid, name)
        for r in rng.sample(rows, min(n, len(rows))):
            c = choose(taste, r["a"], r["b"], rng)
            if c == "tie":
                u.ties += 1
                continue
            chosen, rejected = (r["a"], r["b"]) if c == "A" else (r["b"], r["a"])
            pair = PreferencePair(r["prompt"], chosen, rejected, 1.0, {"user": uid})
            (u.heldout_pairs if rng.random() < EVAL_FRACTION else u.pairs).append(pair)
        users[uid] = u
    return users


# ------------------------------------------------------------------------------------ cached trunk states


class StateCache:
    """Pooled trunk states of every (prompt, reply) row at every layer, for 'reply', 'mean' and 'last' pooling."""

    def __init__(self, trunk: str, max_length: int, rows: list[tuple[str, str]], batch_size: int = 16):
        from rlhf.reward.model import RewardModel

        rm = RewardModel.from_pretrained(trunk, pooling="mean", max_length=max_length)
        model = PersonalRewardModel(rm, 1).eval()
        self.index = {row: i for i, row in enumerate(dict.fromkeys(rows))}
        keys = list(self.index)
        enc = rm.encoder.encode([p for p, _ in keys], [t for _, t in keys])
        tails = torch.tensor(model.reply_tails([t for _, t in keys]))
        self.states: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        with torch.inference_mode():
            for idx in length_grouped_batches([len(e.ids) for e in enc], batch_size, seed=None):
                batch = rm.batch([enc[i] for i in idx])
                hs = model.hidden_states(batch)
                for pooling in ("reply", "mean", "last"):
                    st = self.states.setdefault(pooling, torch.empty(len(hs), len(keys), hs[0].shape[-1]))
                    for layer, h in enumerate(hs):
                        st[layer, idx] = pool(h, batch.attention_mask, tails[idx], pooling).float()
        self.layers = len(hs)
        log.info("trunk states of %d rows in %.0f s", len(keys), time.perf_counter() - t0)

    def table(self, model: PersonalRewardModel, prompts, texts, pooled: bool = False) -> torch.Tensor:
        st = self.states[model.pooling][round(model.depth * (self.layers - 1))]
        h = st[[self.index[(p, t)] for p, t in zip(prompts, texts)]]  # (N, H)
        return h if pooled else model.basis((h - model.feat_mean) / model.feat_std).detach()


# ------------------------------------------------------------------------------------ scoring a variant


def score(users: dict[int, UserFeedback], cfg: PersonalRewardConfig) -> dict[str, dict[str, list[float]]]:
    """Held-out outcomes per user (1 = the reward ranks the person's choice first) for the personal reward, the
    same settings trained on everyone's pairs as one user (pooled), and agreement with the gold function."""
    model = train_shared(users, cfg, 1)
    pooled = [p for u in users.values() for p in u.pairs]
    same = train_shared({0: UserFeedback(0, "everyone", pairs=pooled)}, cfg, 0)
    out: dict[str, dict[str, list[float]]] = {}
    for u in users.values():
        part = fit_user_part(model, u, cfg.user_prior)
        held = u.heldout_pairs
        prompts, chosen, rejected = [p.prompt for p in held], [p.chosen for p in held], [p.rejected for p in held]
        mine = (model.score(prompts, chosen, part.w) > model.score(prompts, rejected, part.w)).float().tolist()
        pool = (same.score(prompts, chosen) > same.score(prompts, rejected)).float().tolist()
        g = TASTES[u.name].gold
        gold = [float(g(c) > g(r)) for c, r in zip(chosen, rejected)]
        out[u.name] = {"personal": mine, "pooled": pool, "choices_vs_gold": gold,
                       "personal_vs_gold": [float(m == x) for m, x in zip(mine, gold)]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_personal_reward")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="policy that writes the replies")
    ap.add_argument("--trunk", default=None, help="personal reward trunk (default: the policy)")
    ap.add_argument("--prompts", type=int, default=160, help="helpful train prompts answered (the split has 160)")
    ap.add_argument("--choices", type=int, default=60, help="A/B choices per user (bench/personalize.py: 30 a round)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="defaults", help="comma-separated names, or 'all': " + ", ".join(VARIANTS))
    ap.add_argument("--max-new-tokens", type=int, default=256, help="reply cap (bench/personalize.py's figures: 96)")
    ap.add_argument("--system", default="You are a helpful assistant. Keep your answers short.")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("rlhf").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    trunk = args.trunk or args.model

    t0 = time.perf_counter()
    rows = replies(args, out)
    draws = [draw(rows, args.choices, r, args.seed) for r in range(args.repeats)]
    needed = [(p.prompt, t) for d in draws for u in d.values() for p in u.pairs + u.heldout_pairs
              for t in (p.chosen, p.rejected)]
    cache = StateCache(trunk, PersonalRewardConfig().max_length, needed)
    PersonalRewardModel.feature_table = (  # type: ignore[method-assign]
        lambda self, prompts, texts, batch_size=16, pooled=False: cache.table(self, prompts, texts, pooled))

    print(f"machine: {machine(f'torch {torch.__version__}', f'{args.threads} threads')}")
    words = np.array([[len(r["a"].split()), len(r["b"].split())] for r in rows])
    finished = np.mean([f for r in rows for f in r.get("finished", [np.nan])])
    print(f"{len(rows)} prompts x 2 replies (max {args.max_new_tokens} tokens): {finished:.0%} end before the cap; words "
          f"per reply p25/p50/p75 {'/'.join(f'{x:.0f}' for x in np.percentile(words, [25, 50, 75]))}, |A - B| words "
          f"p25/p50/p75 {'/'.join(f'{x:.0f}' for x in np.percentile(abs(words[:, 0] - words[:, 1]), [25, 50, 75]))}")
    print(f"{len(TASTES)} users x {args.choices} choices, {EVAL_FRACTION:.0%} held out; {args.repeats} repeats;"
          f" trunk {trunk}")
    results: dict[str, dict] = {}
    for name in names:
        cfg = dataclasses.replace(PersonalRewardConfig(trunk=trunk, seed=args.seed), **VARIANTS[name])
        t1 = time.perf_counter()
        per_user: dict[str, dict[str, list[float]]] = {}
        for d in draws:
            for user, res in score(d, cfg).items():
                for k, v in res.items():
                    per_user.setdefault(user, {}).setdefault(k, []).extend(v)
        every = {k: [x for u in per_user.values() for x in u[k]] for k in next(iter(per_user.values()))}
        results[name] = {"settings": VARIANTS[name], "seconds": time.perf_counter() - t1,
                         "users": {u: {k: est(v) for k, v in r.items()} for u, r in per_user.items()},
                         "all": {k: est(v) for k, v in every.items()},
                         "personal_minus_pooled": est(np.subtract(every["personal"], every["pooled"]).tolist()),
                         "minus_defaults": (est(np.subtract(every["personal"], results["defaults"]["_raw"]).tolist())
                                            if "defaults" in results else None),
                         "_raw": every["personal"]}
        r = results[name]
        users = "  ".join(f"{u} {fmt(x['personal'], pct=True)}" for u, x in r["users"].items())
        vs = f"; vs defaults {fmt(r['minus_defaults'], pct=True)}" if r["minus_defaults"] else ""
        print(f"{name:>16}: personal {fmt(r['all']['personal'], pct=True)} (n={r['all']['personal']['n']}), "
              f"pooled {fmt(r['all']['pooled'], pct=True)}, vs gold {fmt(r['all']['personal_vs_gold'], pct=True)}{vs}"
              f"  [{users}]  ({r['seconds']:.0f} s)", flush=True)
    first = results[names[0]]["all"]
    print(f"the simulated people's held-out choices agree with their gold: {fmt(first['choices_vs_gold'], pct=True)}")
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min")
    for r in results.values():
        r.pop("_raw")
    (out / f"results-{args.max_new_tokens}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
