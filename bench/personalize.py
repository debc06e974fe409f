"""Acceptance of personalisation: simulated users with conflicting tastes chat through the HTTP API, twice.

Four simulated users with measurable, conflicting tastes (gold functions in bench/_personal_eval.py): concise
(fewer words) vs detailed (more words), lists (more structure) vs prose (less). Each round, every user asks
`--turns` helpful prompts (train split) on the chat page's API, gets two replies (A/B) and picks by their gold
function with Bradley-Terry noise (a tie when the gold is equal); then `rlhf personalize` runs. Round 2 repeats
this with each user served by their own adapter ("continuous"). After each round:

- reward: accuracy on each user's held-out choices (25% by hash, never trained on) of their personal reward, of a
  standard reward model trained on everyone's pairs pooled (`rlhf train-reward`), and of the shared weights w_0;
- policy: on the 40 held-out helpful prompts (eval split, never chatted about), each user's adapter vs the shared
  policy, by that user's gold function (paired CI), with KL to the shared policy and fluency (mean per-token
  log-prob under the base);
then serving: p50/p99 latency of a reply with and without adapter switching, and RSS with 1 vs 20 adapters.

    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/personalize.py                 # stages resume after a stop
    .venv/bin/python bench/personalize.py --model TINY_LM --trunk TINY_BERT --turns 6  # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from _machine import machine
from _personal_eval import TASTES, adapter_mb, choose, est, fluency_and_kl, fmt, rss_mb

from rlhf.data import read_prompts, resolve_prompts, write_json
from rlhf.feedback import ServeConfig, add_labelers, open_database, store
from rlhf.personalize.config import ChatConfig, PersonalizeConfig, PersonalRewardConfig
from rlhf.personalize.data import UserFeedback, collect_feedback, user_key
from rlhf.personalize.reward import PersonalReward, train_shared
from rlhf.personalize.serving import AdapterRef, ChatService, ReplyRequest, serve_in_background
from rlhf.personalize.train import run_personalize
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.functions import RewardModelReward
from rlhf.reward.train import train_reward_model

log = logging.getLogger("bench.personalize")
ADMIN = "bench-admin"
EVAL_FRACTION = 0.25


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.a, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.out / "feedback.db")
        self.pdir = self.out / "personal"
        self.results = self.out / "results"
        self.results.mkdir(exist_ok=True)
        self.train_prompts = [p.prompt for p in read_prompts(resolve_prompts("helpful"), split="train")]
        self.eval_prompts = [p.prompt for p in read_prompts(resolve_prompts("helpful"), split="eval")][: args.eval_prompts]
        tokens_file = self.out / "tokens.json"
        if not tokens_file.exists():
            write_json(tokens_file, add_labelers(self.db, [*TASTES, "guest"]))
        self.tokens = json.loads(tokens_file.read_text())

    # ------------------------------------------------------------------ stages (each saved; re-runs skip them)

    def stage(self, name: str, fn) -> dict:  # noqa: ANN001
        path = self.results / f"{name}.json"
        if path.exists():
            log.info("stage %s: done before, skipped", name)
            return json.loads(path.read_text())
        log.info("stage %s ...", name)
        t0 = time.perf_counter()
        res = fn() | {"wall_min": (time.perf_counter() - t0) / 60}
        write_json(path, res)
        return res

    def chat_cfg(self, **kw) -> ChatConfig:
        return ChatConfig(model=self.a.model, personal_dir=str(self.pdir), max_new_tokens=self.a.max_new_tokens,
                          temperature=self.a.temperature, threads=self.a.threads, system_prompt=self.a.system, **kw)

    def user_ids(self) -> dict[str, int]:
        with self.db.session() as s:
            return {name: store.get_labeler(s, name).id for name in TASTES}

    def live_adapters(self) -> dict[str, AdapterRef]:
        ids = self.user_ids()
        with self.db.session() as s:
            rows = store.personal_adapters(s)
        return {name: AdapterRef(user_key(lid), rows[lid].version, rows[lid].path, rows[lid].shared)
                for name, lid in ids.items() if lid in rows}

    # ------------------------------------------------------------------ feedback through the HTTP chat API

    def chat_round(self, rnd: int) -> dict:
        chat = ChatService(self.chat_cfg(max_batch=2 * len(TASTES)), seed=rnd)
        logs: dict[str, list] = {}
        with serve_in_background(chat, ServeConfig(port=0, admin_token=ADMIN), self.db) as url:
            threads = [threading.Thread(target=self.simulate, args=(url, name, rnd, logs)) for name in TASTES]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        chat.close()
        with open(self.out / f"chat_round{rnd}.jsonl", "w") as fh:
            for name, rows in logs.items():
                fh.writelines(json.dumps(r | {"user": name}) + "\n" for r in rows)
        out = {}
        for name, rows in logs.items():
            gold = TASTES[name].gold
            out[name] = {
                "choices": len(rows), "ties": sum(r["choice"] == "tie" for r in rows),
                "policies": sorted({r["policy"] for r in rows}),
                "served_gold": est([gold(t) for r in rows for t in (r["a"], r["b"])]),
            }
        return out

    def simulate(self, url: str, name: str, rnd: int, logs: dict) -> None:
        """One simulated user: new conversation per prompt, two replies, a choice by their gold function."""
        rng = random.Random(f"{self.a.seed}:{name}")
        order = rng.sample(self.train_prompts, len(self.train_prompts))  # each round takes the next prompts
        prompts = order[(rnd - 1) * self.a.turns : rnd * self.a.turns]
        rows = logs.setdefault(name, [])
        taste, pick = TASTES[name], random.Random(f"{self.a.seed}:{name}:{rnd}:choices")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.tokens[name]}"}, timeout=3600) as c:
            # A resumed round reuses its conversations: a request_id is bound to the conversation it was sent in.
            earlier = {conv["title"]: conv["id"] for conv in reversed(c.get("/api/chat/conversations").json())}
            for i, prompt in enumerate(prompts):
                conv = earlier.get(prompt[:80]) or c.post("/api/chat/conversations", json={"title": prompt[:80]}).json()["id"]
                body = {"message": prompt, "compare": True, "request_id": f"{name}-{rnd}-{i}"}
                for _ in range(20):
                    r = c.post(f"/api/chat/conversations/{conv}/turns", json=body)
                    if r.status_code != 503:
                        break
                    time.sleep(float(r.headers.get("retry-after", 5)))
                r.raise_for_status()
                turn = r.json()
                a, b = (x["text"] for x in turn["candidates"])
                choice = choose(taste, a, b, pick)
                c.post(f"/api/chat/turns/{turn['id']}/feedback", json={"choice": choice}).raise_for_status()
                rows.append({"round": rnd, "prompt": prompt, "a": a, "b": b, "choice": choice, "policy": turn["policy"],
                             "adapter_version": turn["adapter_version"]})
                if (i + 1) % 5 == 0:
                    log.info("round %d: %s made %d choices", rnd, name, i + 1)

    # ------------------------------------------------------------------ rlhf personalize

    def reward_cfg(self) -> PersonalRewardConfig:
        return PersonalRewardConfig(trunk=self.a.trunk, eval_fraction=EVAL_FRACTION, seed=self.a.seed)

    def personalize(self, rnd: int) -> dict:
        opt = getattr(PersonalizeConfig(), self.a.optimizer)
        steps = {} if self.a.steps is None else {"max_steps": self.a.steps}
        cfg = PersonalizeConfig(
            db=str(self.out / "feedback.db"), out_dir=str(self.pdir), model=self.a.model, min_pairs=8,
            threads=self.a.threads, reward=self.reward_cfg(), system_prompt=self.a.system, optimizer=self.a.optimizer,
            **{self.a.optimizer: dataclasses.replace(opt, **steps, sampling=dataclasses.replace(
                opt.sampling, max_new_tokens=self.a.max_new_tokens, temperature=self.a.temperature))},
        )

        def on_event(kind: str, data: dict) -> None:
            if kind == "policy_step":
                m = data["metrics"]
                log.info("  %s step %d: reward %.3f KL %.2f len %.1f (%.0f s)", data["user"], m["step"],
                         m["reward/raw_mean"], m["kl/mean"], m["response/length_mean"], m["time/step"])
            elif kind == "reward_step" and data["step"] % 20 == 0:
                log.info("  shared reward step %d/%d loss %.3f", data["step"], data["total"], data["loss"])

        res = run_personalize(cfg, on_event)
        shutil.copytree(self.pdir / "reward", self.out / f"reward_round{rnd}", dirs_exist_ok=True)  # for eval_reward
        return {"shared_retrained": res.shared_retrained, "shared_reason": res.shared_reason,
                "users": [dataclasses.asdict(u) for u in res.users], "seconds": res.seconds}

    # ------------------------------------------------------------------ evaluation of a round

    def eval_reward(self, rnd: int) -> dict:
        """Held-out choices: the personal reward vs a standard reward model trained on everyone's pairs pooled."""
        with self.db.session() as s:
            users = collect_feedback(store.chat_feedback(s), EVAL_FRACTION, self.a.seed)
        pooled = [p for u in users.values() for p in u.pairs]
        rm_dir = self.out / f"shared_rm_round{rnd}"
        train_reward_model(RewardTrainConfig(model=self.a.rm_trunk, out_dir=str(rm_dir), eval_fraction=0.0, epochs=4,
                                             threads=self.a.threads, tensorboard=False, resume=False), pairs=pooled)
        shared_rm = RewardModelReward(rm_dir)
        # the same frozen trunk and basis size, trained on everyone's pairs as one user: personalisation taken away
        pooled_same = train_shared({0: UserFeedback(0, "everyone", pairs=pooled)}, self.reward_cfg(), 0)
        out, all_p, all_s, all_0, all_q, all_g, all_c = {}, [], [], [], [], [], []
        for u in users.values():
            held = u.heldout_pairs
            if not held:
                continue
            prompts, chosen, rejected = [p.prompt for p in held], [p.chosen for p in held], [p.rejected for p in held]
            mine = PersonalReward(self.out / f"reward_round{rnd}", user_key(u.labeler_id))
            r_c, r_r = mine(prompts, chosen), mine(prompts, rejected)
            own = (r_c > r_r).float().tolist()
            # the simulated person's own noise: held-out choices that agree with their gold function, and the
            # personal reward's agreement with the gold function itself (pairs of equal gold left out)
            g = TASTES[u.name].gold
            gd = [g(c) - g(r) for c, r in zip(chosen, rejected)]
            consistent = [float(d > 0) for d in gd if d != 0]
            vs_gold = [float((d > 0) == bool(a > b)) for d, a, b in zip(gd, r_c, r_r) if d != 0]
            pooled_rm = (shared_rm(prompts, chosen) > shared_rm(prompts, rejected)).float().tolist()
            w0 = (mine.model.score(prompts, chosen) > mine.model.score(prompts, rejected)).float().tolist()
            same = (pooled_same.score(prompts, chosen) > pooled_same.score(prompts, rejected)).float().tolist()
            out[u.name] = {"train_pairs": len(u.pairs), "personal": est(own), "shared_rm": est(pooled_rm),
                           "shared_w0": est(w0), "pooled_same_trunk": est(same),
                           "personal_minus_pooled": est(np.subtract(own, same).tolist()),
                           "choices_agree_with_gold": est(consistent), "personal_vs_gold": est(vs_gold)}
            all_p += own
            all_s += pooled_rm
            all_0 += w0
            all_q += same
            all_g += vs_gold
            all_c += consistent
        out["all users"] = {"train_pairs": len(pooled), "personal": est(all_p), "shared_rm": est(all_s),
                            "shared_w0": est(all_0), "pooled_same_trunk": est(all_q),
                            "personal_minus_pooled": est(np.subtract(all_p, all_q).tolist()),
                            "choices_agree_with_gold": est(all_c), "personal_vs_gold": est(all_g)}
        return out

    def eval_policy(self, rnd: int) -> dict:
        """Each user's adapter vs the shared policy on held-out prompts: gold (paired), KL to shared, fluency."""
        adapters = self.live_adapters()
        chat = ChatService(self.chat_cfg(max_batch=8 * (1 + len(adapters)), max_loaded_adapters=len(adapters) + 1,
                                         max_queue=10_000), seed=1000 + rnd)
        policies = {"shared": None} | adapters
        msgs = [({"role": "user", "content": p},) for p in self.eval_prompts]
        futures = {(name, i): chat.submit(ReplyRequest(m, 1, self.a.max_new_tokens, ref))
                   for i, m in enumerate(msgs) for name, ref in policies.items()}
        replies = {name: [futures[(name, i)].result() for i in range(len(msgs))] for name in policies}
        chat.close()
        texts = {name: [r.texts[0] for r in rs] for name, rs in replies.items()}
        with open(self.out / f"eval_round{rnd}.jsonl", "w") as fh:
            for i, p in enumerate(self.eval_prompts):
                fh.write(json.dumps({"prompt": p} | {name: texts[name][i] for name in policies}) + "\n")
        paths = {name: self.pdir / ref.path for name, ref in adapters.items()}
        system = [{"role": "system", "content": self.a.system}] if self.a.system else []
        lm = fluency_and_kl(self.a.model, None, paths, {n: [r.ids[0] for r in rs] for n, rs in replies.items()},
                            [system + list(m) for m in msgs], self.a.temperature)
        gold = {taste: {name: est([TASTES[taste].gold(t) for t in texts[name]]) for name in policies}
                for taste in TASTES}
        users = {}
        for name in adapters:
            g = TASTES[name].gold
            diff = [g(a) - g(b) for a, b in zip(texts[name], texts["shared"])]
            users[name] = {"gold_adapter": gold[name][name], "gold_shared": gold[name]["shared"], "gold_diff": est(diff),
                           "win_rate": est([1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diff])} | lm[name]
        return {"users": users, "shared": lm["shared"], "gold_matrix": gold, "prompts": len(msgs)}

    # ------------------------------------------------------------------ serving

    def serving(self) -> dict:
        adapters = self.live_adapters()
        names = list(adapters)
        out: dict = {"adapters": len(adapters), "tokens": self.a.latency_tokens}
        for label, lru in (("switching, all loaded", 8), ("switching, LRU 1 (load per request)", 1)):
            chat = ChatService(self.chat_cfg(max_loaded_adapters=lru, max_batch=1))
            with serve_in_background(chat, ServeConfig(port=0, admin_token=ADMIN), self.db) as url:
                self.latencies(url, ["guest", *names])  # warm-up: the model, and every adapter when they fit
                plans = {label: [names[i % len(names)] for i in range(self.a.latency_n)]}
                if lru > 1:
                    plans = {"base (no adapter)": ["guest"] * self.a.latency_n,
                             "one adapter, no switching": [names[0]] * self.a.latency_n} | plans
                for plan, who in plans.items():
                    out[plan] = self.latencies(url, who)
            chat.close()
        out["memory"] = self.memory(adapters)
        return out

    def latencies(self, url: str, who: list[str]) -> dict:
        ms, per_token = [], []
        for i, name in enumerate(who):
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.tokens[name]}"}, timeout=600) as c:
                conv = c.post("/api/chat/conversations", json={}).json()["id"]
                t0 = time.perf_counter()
                r = c.post(f"/api/chat/conversations/{conv}/turns", json={
                    "message": self.eval_prompts[i % len(self.eval_prompts)], "compare": False,
                    "max_new_tokens": self.a.latency_tokens})
                dt = 1000 * (time.perf_counter() - t0)
                r.raise_for_status()
                ms.append(dt)
                per_token.append(dt / max(1, r.json()["usage"]["tokens"][0]))
        return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                "ms_per_token_p50": float(np.percentile(per_token, 50))}

    def memory(self, adapters: dict[str, AdapterRef]) -> dict:
        refs = list(adapters.values())
        chat = ChatService(self.chat_cfg(max_loaded_adapters=32, max_batch=1))
        ask = lambda ref: chat.reply(ReplyRequest(({"role": "user", "content": "Hi"},), 1, 1, ref))  # noqa: E731
        ask(None)
        base = rss_mb()
        ask(refs[0])
        one = rss_mb()
        for i in range(20):  # 20 users' adapters: the real ones under 20 names (each load is its own copy)
            r = refs[i % len(refs)]
            ask(dataclasses.replace(r, key=f"m{i}"))
        twenty = rss_mb()
        assert len(chat.loaded_adapters()) == 21
        chat.close()
        params = sum(p.numel() for n, p in chat.model.named_parameters() if "lora_" not in n) * 4 / 2**20
        size = adapter_mb(self.pdir / refs[0].path)
        return {"rss_base_mb": base, "rss_1_adapter_mb": one, "rss_20_adapters_mb": twenty,
                "per_adapter_mb": (twenty - one) / 19, "adapter_params_mb": size, "model_params_mb": params}


def report(b: Bench, res: dict) -> None:
    a = b.a
    print(f"\nmachine: {machine(f'torch {torch.__version__}', f'{a.threads} threads')} (timings are provisional "
          "unless nothing else ran)")
    print(f"model {a.model}, personal reward trunk {a.trunk} (frozen), standard RM trunk {a.rm_trunk}; {len(TASTES)} users x {a.turns} A/B choices x {a.rounds} rounds; "
          f"replies <= {a.max_new_tokens} tokens at T={a.temperature}, system prompt {a.system!r}; "
          f"{a.optimizer} {a.steps or 'default'} steps/user/round")
    for name, t in TASTES.items():
        print(f"  {name:9s} {t.statement}; noise: Bradley-Terry, scale {t.scale:g}")
    for rnd in range(1, a.rounds + 1):
        chat, pers, rew, pol = (res[f"{k}{rnd}"] for k in ("chat", "personalize", "reward", "policy"))
        print(f"\n== round {rnd}: feedback ({chat['wall_min']:.0f} min), personalize ({pers['wall_min']:.0f} min: "
              f"shared reward {'retrained' if pers['shared_retrained'] else 'kept'}, {pers['shared_reason']})")
        for name, c in chat.items():
            if name in TASTES:
                print(f"  {name:9s} {c['choices']} choices ({c['ties']} ties), served by {c['policies']}, "
                      f"gold of the replies it saw {fmt(c['served_gold'])}")
        for u in pers["users"]:
            p = u["policy"]
            version = f" v{u['version']} from {u['started_from'] or '-'}" if u["version"] else ""
            print(f"  {u['name']:9s} {u['action']}{version}; pairs {u['pairs']}; "
                  + (f"{p['optimizer']} reward {p['reward_first']:.2f} -> {p['reward_last']:.2f}, KL {p['kl_last']:.2f}, "
                     f"len {p['length_last']:.0f}" if p else u["reason"]))
        print("  reward accuracy on held-out choices (95% bootstrap CI):")
        print(f"  {'user':10s} {'train':>5s} {'held':>4s}  {'personal':>16s}  {'pooled, same trunk':>18s}  "
              f"{'personal - pooled':>20s}  {'shared w0':>16s}  {'rlhf train-reward':>18s}  "
              f"{'choices = gold':>16s}  {'personal = gold':>16s}")
        for name, r in rew.items():
            if name == "wall_min":
                continue
            print(f"  {name:10s} {r['train_pairs']:5d} {r['personal']['n']:4d}  {fmt(r['personal'], True):>16s}  "
                  f"{fmt(r['pooled_same_trunk'], True):>18s}  {fmt(r['personal_minus_pooled'], True):>20s}  "
                  f"{fmt(r['shared_w0'], True):>16s}  {fmt(r['shared_rm'], True):>18s}  "
                  f"{fmt(r.get('choices_agree_with_gold', {}), True):>16s}  {fmt(r.get('personal_vs_gold', {}), True):>16s}")
        print(f"  policy on {pol['prompts']} held-out prompts: own adapter vs the shared policy (base), own gold:")
        print(f"  {'user':10s} {'gold adapter':>16s} {'gold shared':>16s} {'paired diff':>18s} {'win rate':>16s} "
              f"{'KL to shared':>16s} {'fluency':>18s}")
        for name, u in pol["users"].items():
            print(f"  {name:10s} {fmt(u['gold_adapter'], digits=1):>16s} {fmt(u['gold_shared'], digits=1):>16s} "
                  f"{fmt(u['gold_diff'], digits=1):>18s} {fmt(u['win_rate'], True):>16s} "
                  f"{fmt(u['kl_to_shared'], digits=1):>16s} {fmt(u['fluency']):>18s}")
        print(f"  {'shared':10s} fluency {fmt(pol['shared']['fluency'])}")
        print("  mean gold of each policy's replies (rows: taste; columns: policy):")
        cols = list(pol["gold_matrix"]["concise"])
        print("  " + " " * 10 + "".join(f"{c:>10s}" for c in cols))
        for taste, row in pol["gold_matrix"].items():
            print(f"  {taste:10s}" + "".join(f"{row[c]['mean']:>10.1f}" for c in cols))
    s = res.get("serving")
    if s:
        print(f"\n== serving ({s['tokens']}-token replies, one at a time, through HTTP; provisional):")
        for k, v in s.items():
            if isinstance(v, dict) and "p50_ms" in v:
                print(f"  {k:38s} p50 {v['p50_ms']:7.0f} ms  p99 {v['p99_ms']:7.0f} ms  "
                      f"{v['ms_per_token_p50']:5.0f} ms/token  (n={v['n']})")
        m = s["memory"]
        print(f"  RSS: model loaded {m['rss_base_mb']:.0f} MB; +1 adapter {m['rss_1_adapter_mb']:.0f} MB; "
              f"+20 adapters {m['rss_20_adapters_mb']:.0f} MB -> {m['per_adapter_mb']:.1f} MB per loaded user "
              f"(adapter weights {m['adapter_params_mb']:.1f} MB; model weights {m['model_params_mb']:.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_personalize")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--trunk", default="smollm2-135m-instruct", help="personal reward trunk (frozen)")
    ap.add_argument("--rm-trunk", default="all-minilm-l6-v2", help="trunk of the standard pooled reward model")
    ap.add_argument("--turns", type=int, default=36, help="A/B choices per user per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--optimizer", default="rloo", choices=("rloo", "ppo", "grpo"), help="rlhf personalize's RL update")
    ap.add_argument("--steps", type=int, default=None, help="RL steps per user per round (default: the config's)")
    ap.add_argument("--max-new-tokens", type=int, default=256,
                    help="reply cap; at 96 most replies are cut and length tastes hide (bench/personal_reward.py)")
    ap.add_argument("--system", default="You are a helpful assistant. Keep your answers short.",
                    help="the chat server's system prompt (replies of varied length; the RL update samples under it too)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--eval-prompts", type=int, default=40)
    ap.add_argument("--latency-n", type=int, default=12)
    ap.add_argument("--latency-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.latency_tokens > args.max_new_tokens:  # the chat API refuses longer replies than the server allows
        ap.error(f"--latency-tokens {args.latency_tokens} exceeds --max-new-tokens {args.max_new_tokens}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "rlhf.reward.train"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    b = Bench(args)
    saved = b.out / "bench_args.json"
    if saved.exists() and json.loads(saved.read_text()) != vars(args):
        sys.exit(f"{b.out} holds a run with other settings ({saved}); use another --out")
    write_json(saved, vars(args))
    res = {}
    for rnd in range(1, args.rounds + 1):
        res[f"chat{rnd}"] = b.stage(f"round{rnd}_chat", lambda: b.chat_round(rnd))
        res[f"personalize{rnd}"] = b.stage(f"round{rnd}_personalize", lambda: b.personalize(rnd))
        res[f"reward{rnd}"] = b.stage(f"round{rnd}_reward", lambda: b.eval_reward(rnd))
        res[f"policy{rnd}"] = b.stage(f"round{rnd}_policy", lambda: b.eval_policy(rnd))
    res["serving"] = b.stage("serving", b.serving)
    write_json(b.out / "summary.json", res)
    report(b, res)


if __name__ == "__main__":
    main()
