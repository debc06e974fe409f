"""`run_personalize`: update each user's reward part and LoRA adapter from their new chat feedback.

1 read everyone's chat feedback -> 2 (re)train the shared reward part when the pooled feedback changed enough,
else keep it -> 3 fit the reward part of every user with new feedback (all users after a shared retrain) ->
4 for each user with new feedback and enough pairs: RL (RLOO by default) against their reward, starting from their
last adapter (or fresh on the shared policy), KL-bounded to the shared policy -> 5 publish the adapter in the store.
One run at a time per personal folder; users without new feedback are skipped (incremental).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rlhf.config import save_config, to_dict
from rlhf.cpu import setup_cpu
from rlhf.data import write_json
from rlhf.feedback import store
from rlhf.feedback.db import Database, open_database
from rlhf.models.lora import load_adapter
from rlhf.models.registry import load_causal_lm
from rlhf.personalize.config import PersonalizeConfig
from rlhf.personalize.data import UserFeedback, collect_feedback, user_key
from rlhf.personalize.layout import PersonalDir, adapter_fingerprint, atomic_replace_dir, resolve_shared_adapter
from rlhf.personalize.reward import (
    SPEC, PersonalReward, PersonalRewardModel, UserPart, fit_user_part, load_user_part, save_user_part, train_shared,
)

if TYPE_CHECKING:
    from rlhf.policy.train import PolicyResult
    from rlhf.reward.functions import RewardFunction
    from rlhf.types import Prompt

log = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]
"""on_event(kind, data): 'reward_step' {step, total, loss}, 'user_start' {user, steps, started_from, optimizer},
'policy_step' {user, metrics}, 'user_done' {user, result}."""

FINISHED = "personal.json"


@dataclass
class UserResult:
    labeler_id: int
    name: str
    pairs: int
    thumbs: int
    action: str
    """'trained', 'skipped' (no new feedback), 'reward only' (too few pairs) or 'deleted' (gone meanwhile)."""
    reason: str = ""
    version: int | None = None
    started_from: str = ""
    """'v<N>' (their previous adapter), or 'shared' / 'base' for a first adapter."""
    heldout: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    """The optimiser, its steps and stop reason, and the first and last step's reward and KL."""


@dataclass
class PersonalizeResult:
    out_dir: Path
    shared_retrained: bool
    shared_reason: str
    reward_version: int
    users: list[UserResult]
    seconds: float

    def by_name(self, name: str) -> UserResult:
        return next(u for u in self.users if u.name == name)


def run_personalize(cfg: PersonalizeConfig, on_event: Event | None = None) -> PersonalizeResult:
    """Train or update the per-user reward parts and adapters under `cfg.out_dir` from the store at `cfg.db`."""
    setup_cpu(cfg.threads)
    pdir = PersonalDir.at(cfg.out_dir)
    with pdir.lock():
        db = open_database(cfg.db)
        try:
            return _run(cfg, db, pdir, on_event or (lambda kind, data: None))
        finally:
            db.close()


def _run(cfg: PersonalizeConfig, db: Database, pdir: PersonalDir, emit: Event) -> PersonalizeResult:
    t0 = time.perf_counter()
    save_config(cfg, pdir.root / "personalize.yaml")
    shared_dir = resolve_shared_adapter(cfg.shared_adapter)
    shared_fp = adapter_fingerprint(shared_dir)

    # 1. everyone's feedback (the shared part learns from all users), then the users this run serves
    with db.session() as s:
        users = collect_feedback(store.chat_feedback(s), cfg.reward.eval_fraction, cfg.reward.seed)
        adapters = {lid: (a.version, a.last_judgement_id, a.shared, a.path) for lid, a in store.personal_adapters(s).items()}
        known = [lab.id for lab in store.list_labelers(s)]
    if removed := pdir.remove_orphans(known):
        log.info("removed files of deleted users %s", removed)
    selected = {lid: u for lid, u in users.items() if not cfg.users or u.name in cfg.users}
    if missing := sorted(set(cfg.users) - {u.name for u in users.values()}):
        log.warning("no chat feedback from %s", ", ".join(missing))
    if not any(u.pairs for u in users.values()):
        log.warning("no preference pairs in %s yet: nothing to personalise", cfg.db)
        return PersonalizeResult(pdir.root, False, "no pairs", 0, [], time.perf_counter() - t0)

    # 2-3. the reward: shared part (retrained when due), then users' parts
    model, retrained, reason = _shared_reward(cfg, pdir, users, emit)
    parts = _fit_parts(cfg, db, pdir, model, users if retrained else selected, retrained, emit)

    # 4-5. adapters
    results = []
    for lid, u in sorted(selected.items()):
        part = parts.get(lid) or load_user_part(pdir.reward, lid)
        res = UserResult(lid, u.name, len(u.pairs), len(u.thumbs), "", heldout=part.heldout if part else {})
        live = adapters.get(lid)
        if part is None:
            res.action, res.reason = "deleted", "the user was deleted during this run"
        elif len(u.pairs) < cfg.min_pairs:
            res.action, res.reason = "reward only", f"{len(u.pairs)} pairs < min_pairs={cfg.min_pairs}"
        elif live and not cfg.force and live[1] >= u.last_judgement_id and live[2] == shared_fp:
            res.action, res.reason, res.version = "skipped", "no new feedback since its adapter", live[0]
        else:
            _train_user(cfg, db, pdir, u, live, shared_dir, shared_fp, res, emit)
        results.append(res)
        emit("user_done", {"user": u.name, "result": res})
    out = PersonalizeResult(pdir.root, retrained, reason, model.version, results, time.perf_counter() - t0)
    write_json(pdir.root / "personalize_summary.json", {
        "shared_retrained": retrained, "shared_reason": reason, "reward_version": model.version,
        "seconds": out.seconds, "users": [dataclasses.asdict(r) for r in results],
    })
    return out


# ------------------------------------------------------------------------------------ the reward


def _shared_reward(cfg: PersonalizeConfig, pdir: PersonalDir, users: dict[int, UserFeedback], emit: Event):
    """(model, retrained, why): the current shared part, retrained first when due."""
    meta = json.loads((pdir.reward / SPEC).read_text(encoding="utf-8")) if (pdir.reward / SPEC).is_file() else None
    pooled = sum(len(u.pairs) for u in users.values())
    with_pairs = {lid for lid, u in users.items() if u.pairs}
    settings = {k: v for k, v in to_dict(cfg.reward).items() if k not in ("refresh",)}
    reason = ""
    if meta is None:
        reason = "no shared reward yet"
    elif cfg.force:
        reason = "forced"
    elif meta.get("settings") != settings:
        reason = "reward settings changed"
    elif set(meta.get("users", [])) - with_pairs:
        reason = "a user's feedback was removed"
    elif pooled - meta.get("pairs", 0) >= cfg.reward.refresh * meta.get("pairs", 0):
        reason = f"pooled pairs {meta.get('pairs', 0)} -> {pooled}"
    if not reason:
        return PersonalRewardModel.load(pdir.reward), False, f"kept (pooled pairs {meta['pairs']} -> {pooled})"
    version = (meta or {}).get("version", 0) + 1
    log.info("training the shared reward part v%d on %d pairs of %d users (%s)", version, pooled, len(with_pairs), reason)
    model = train_shared(users, cfg.reward, version,
                         lambda step, total, loss: emit("reward_step", {"step": step, "total": total, "loss": loss}))
    model.meta["settings"] = settings
    return model, True, reason


def _fit_parts(
    cfg: PersonalizeConfig, db: Database, pdir: PersonalDir, model: PersonalRewardModel,
    users: dict[int, UserFeedback], retrained: bool, emit: Event,
) -> dict[int, UserPart]:
    """Fit and save users' parts. After a shared retrain all parts go into a new reward folder swapped in at once."""
    target = pdir.root / ".reward.new" if retrained else pdir.reward
    if retrained:
        shutil.rmtree(target, ignore_errors=True)
        model.save(target)
    parts = {}
    for lid, u in sorted(users.items()):
        old = None if retrained else load_user_part(pdir.reward, lid)
        if old is not None and old.shared_version == model.version and old.last_judgement_id >= u.last_judgement_id:
            parts[lid] = old
            continue
        parts[lid] = fit_user_part(model, u, cfg.reward.user_prior)
        save_user_part(target, parts[lid])
    if retrained:
        atomic_replace_dir(target, pdir.reward)
    with db.session() as s:  # users deleted while we wrote: their part must not survive (see users.delete_user_data)
        for lid in list(parts):
            if s.get(store.Labeler, lid) is None:
                pdir.remove_user(lid)
                parts.pop(lid)
    return parts


# ------------------------------------------------------------------------------------ a user's adapter


def train_user_adapter(
    cfg: PersonalizeConfig, reward_fn: RewardFunction, model: Any, tokenizer: Any, prompts: Sequence[Prompt],
    out: Path, reward_spec: str, on_step: Callable[[dict], None] | None = None,
) -> PolicyResult:
    """One user's adapter: `cfg.optimizer` against `reward_fn` on `prompts`, into `out` (a fresh policy run).

    `model` is the reference (the shared policy merged into the base) with the user's adapter on it when they
    have one; otherwise the trainer adds a fresh LoRA. `reward_spec` is recorded in the run's config."""
    from rlhf.policy import train_policy

    opt = cfg.policy
    run_cfg = dataclasses.replace(opt, model=cfg.model, out_dir=str(out), reward=reward_spec, resume=False,
                                  threads=opt.threads or cfg.threads, system_prompt=cfg.system_prompt)
    return train_policy(run_cfg, reward_fn, model=model, tokenizer=tokenizer, prompts=prompts, on_step=on_step)


def _train_user(
    cfg: PersonalizeConfig, db: Database, pdir: PersonalDir, u: UserFeedback, live: tuple | None,
    shared_dir: Path | None, shared_fp: str, res: UserResult, emit: Event,
) -> None:
    """Train one user's adapter into a new version folder, then publish it (unless the user was deleted meanwhile)."""
    version = max([*pdir.versions(u.labeler_id), live[0] if live else 0]) + 1
    out = pdir.version_dir(u.labeler_id, version)
    shutil.rmtree(out, ignore_errors=True)
    model, tok = load_causal_lm(cfg.model)
    if shared_dir is not None:
        model = load_adapter(model, shared_dir, merge=True)  # the reference: the shared policy itself
    res.started_from = "shared" if shared_dir is not None else "base"
    if live and live[2] == shared_fp and (pdir.root / live[3] / "adapter_config.json").is_file():
        model = load_adapter(model, pdir.root / live[3], trainable=True)
        res.started_from = f"v{live[0]}"
    reward_fn = PersonalReward(pdir.reward, user_key(u.labeler_id))
    emit("user_start", {"user": u.name, "steps": cfg.policy.max_steps, "started_from": res.started_from,
                        "optimizer": cfg.optimizer})
    run = train_user_adapter(cfg, reward_fn, model, tok, u.prompts, out,
                             f"rm-user:{pdir.reward}:{user_key(u.labeler_id)}",
                             lambda m: emit("policy_step", {"user": u.name, "metrics": m}))
    first, last = (run.history[0], run.history[-1]) if run.history else ({}, {})
    res.policy = {"optimizer": run.algorithm, "steps": run.steps, "stop_reason": run.stop_reason,
                  "reward_first": first.get("reward/raw_mean"), "reward_last": last.get("reward/raw_mean"),
                  "kl_last": last.get("kl/mean"), "length_last": last.get("response/length_mean")}
    write_json(out / FINISHED, {
        "labeler_id": u.labeler_id, "name": u.name, "version": version, "started_from": res.started_from,
        "shared_adapter": str(shared_dir) if shared_dir else None, "shared": shared_fp, "base": cfg.model,
        "last_judgement_id": u.last_judgement_id, "pairs": len(u.pairs), "thumbs": len(u.thumbs),
        "prompts": len(u.prompts), "policy": res.policy,
    })
    rel = str((out / "adapter").relative_to(pdir.root))
    try:
        with db.session() as s:
            store.publish_adapter(s, u.labeler_id, version, rel, shared_fp, u.last_judgement_id, len(u.pairs))
    except store.NotFound:
        pdir.remove_user(u.labeler_id)
        res.action, res.reason = "deleted", "the user was deleted during training"
        return
    pdir.prune_versions(u.labeler_id, cfg.keep_versions, live=version)
    res.action, res.version = "trained", version
    res.reason = "first adapter" if not live else "new feedback" if live[1] < u.last_judgement_id else "forced or shared changed"
