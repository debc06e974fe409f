"""`rlhf personalize` end to end on tiny models: per-user rewards and adapters, incremental, from the shared policy."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from personal_helpers import WORDS, make_adapter

from rlhf.config import load_config
from rlhf.feedback import store
from rlhf.personalize.config import ChatConfig, PersonalizeConfig
from rlhf.personalize.layout import Busy, PersonalDir
from rlhf.personalize.serving import AdapterRef, ChatService
from rlhf.personalize.train import run_personalize


def chat_feedback(db, name: str, likes: str, n: int, seed: int) -> None:
    """n A/B turns of `name`, choosing the reply that contains `likes` (stored as the chat API would)."""
    rng = random.Random(seed)
    other = "awful" if likes == "great" else "great"
    with db.session() as s:
        lab = store.get_labeler(s, name)
        conv = store.create_conversation(s, lab)
        for _ in range(n):
            a, b = (" ".join(rng.sample(WORDS, 4) + [w]) for w in (likes, other))
            first_is_liked = rng.random() < 0.5
            turn = store.add_chat_turn(s, lab, conv, f"question {rng.choice(WORDS)}",
                                       [a, b] if first_is_liked else [b, a], "base")
            store.submit_chat_feedback(s, lab, turn.id, "A" if first_is_liked else "B")


@pytest.fixture()
def cfg(db, tmp_path, tiny_lm_dir, tiny_bert_dir) -> PersonalizeConfig:
    return load_config(PersonalizeConfig, None, [
        f"db={db.url.removeprefix('sqlite:///')}", f"out_dir={tmp_path / 'personal'}", f"model={tiny_lm_dir}",
        "min_pairs=4", f"reward.trunk={tiny_bert_dir}", "reward.rank=2", "reward.epochs=3", "reward.batch_size=8",
        "reward.max_length=32", "reward.lr=1e-3", "reward.head_lr=2e-2", "reward.eval_fraction=0.25",
        *(f"{o}.{k}" for o in ("rloo", "ppo") for k in (
            "batch_size=4", "max_steps=2", "sampling.max_new_tokens=8", "max_prompt_tokens=48", "lora.r=4",
            "checkpoint_every=0")),
        "ppo.mini_batch_size=2", "rloo.k=2", "rloo.mini_batch_size=4", "rloo.grad_accum_steps=2",
    ])


def live(db) -> dict[int, tuple[int, int]]:
    with db.session() as s:
        return {lid: (a.version, a.last_judgement_id) for lid, a in store.personal_adapters(s).items()}


def test_incremental_personalisation(cfg, db, tokens):
    chat_feedback(db, "ann", "great", 12, seed=1)
    chat_feedback(db, "bob", "awful", 12, seed=2)
    pdir = PersonalDir.at(cfg.out_dir)

    first = run_personalize(cfg)
    assert first.shared_retrained and first.reward_version == 1
    assert [(u.name, u.action, u.version, u.started_from) for u in first.users] == [
        ("ann", "trained", 1, "base"), ("bob", "trained", 1, "base")]
    ann = first.by_name("ann")
    assert ann.pairs + ann.heldout["pairs"] == 12 and ann.heldout["pairs"] > 0  # 25% of the choices held out
    assert live(db) == {1: (1, 12), 2: (1, 24)}  # bob's judgements come after ann's
    for lid in (1, 2):
        version = pdir.version_dir(lid, 1)
        assert (version / "adapter" / "adapter_model.safetensors").is_file() and (version / "checkpoint.pt").is_file()
        meta = json.loads((version / "personal.json").read_text())
        assert meta["last_judgement_id"] == live(db)[lid][1] and meta["shared"] == "none"
        assert pdir.reward_part(lid)[0].is_file()
    run_cfg = (pdir.version_dir(1, 1) / "rloo.yaml").read_text()  # RLOO, the default optimizer
    assert f"rm-user:{pdir.reward}:u1" in run_cfg
    assert first.by_name("ann").policy["optimizer"] == "rloo" and first.by_name("ann").policy["steps"] == 2

    # nothing new: nobody is retrained, the shared reward is kept
    again = run_personalize(cfg)
    assert not again.shared_retrained and [u.action for u in again.users] == ["skipped", "skipped"]
    assert live(db) == {1: (1, 12), 2: (1, 24)}

    # ann chats more: only ann is updated, from her own last adapter; the shared part is kept (2 pairs < 25%)
    chat_feedback(db, "ann", "great", 2, seed=3)
    third = run_personalize(cfg)
    assert not third.shared_retrained
    assert [(u.name, u.action, u.version, u.started_from) for u in third.users] == [
        ("ann", "trained", 2, "v1"), ("bob", "skipped", 1, "")]
    assert live(db)[1] == (2, 26) and live(db)[2] == (1, 24)
    assert json.loads(pdir.reward_part(1)[1].read_text())["last_judgement_id"] == 26

    # the chat server answers ann with her newest adapter, bob with his
    chat = ChatService(ChatConfig(model=cfg.model, personal_dir=cfg.out_dir, max_new_tokens=8))
    try:
        with db.session() as s:
            a = store.personal_adapter(s, 1)
        assert chat.policy_for(AdapterRef("u1", a.version, a.path, a.shared)) == ("user", AdapterRef("u1", 2, a.path, "none"))
    finally:
        chat.close()


@pytest.mark.parametrize("optimizer", ["rloo", "ppo"])
def test_users_start_from_the_shared_adapter_and_stay_kl_bounded_to_it(cfg, db, tokens, tiny_lm_dir, tmp_path, optimizer):
    chat_feedback(db, "ann", "great", 10, seed=1)
    shared = make_adapter(tiny_lm_dir, tmp_path / "shared", "x", 1, seed=5)
    cfg = dataclasses.replace(cfg, shared_adapter=str(tmp_path / "shared" / shared.path), users=("ann",),
                              optimizer=optimizer)
    res = run_personalize(cfg)
    assert [(u.name, u.action, u.started_from) for u in res.users] == [("ann", "trained", "shared")]
    version = PersonalDir.at(cfg.out_dir).version_dir(1, 1)
    steps = [json.loads(line) for line in (version / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["kl/mean"] == pytest.approx(0.0, abs=1e-6)  # the reference is the shared policy itself
    assert (version / f"{optimizer}.yaml").is_file()
    assert (version / "value_head.safetensors").is_file() == (optimizer == "ppo")  # RLOO learns no critic
    meta = json.loads((version / "personal.json").read_text())
    assert meta["shared"] != "none" and meta["shared"] == live_shared(db)
    # a different shared adapter makes ann due again, starting over from it
    other = make_adapter(tiny_lm_dir, tmp_path / "shared2", "x", 1, seed=6)
    again = run_personalize(dataclasses.replace(cfg, shared_adapter=str(tmp_path / "shared2" / other.path)))
    assert [(u.action, u.version, u.started_from) for u in again.users] == [("trained", 2, "shared")]


def live_shared(db) -> str:
    with db.session() as s:
        return store.personal_adapter(s, 1).shared


def test_few_pairs_get_a_reward_part_only_and_deleted_users_leave_nothing(cfg, db, tokens):
    chat_feedback(db, "ann", "great", 12, seed=1)
    chat_feedback(db, "bob", "awful", 3, seed=2)
    pdir = PersonalDir.at(cfg.out_dir)
    orphan = pdir.version_dir(99, 1)
    orphan.mkdir(parents=True)  # files of a user deleted while an earlier run was writing them
    cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, eval_fraction=0.0))
    res = run_personalize(cfg)
    bob = res.by_name("bob")
    assert (bob.action, bob.pairs) == ("reward only", 3) and pdir.reward_part(2)[0].is_file()
    assert 2 not in live(db) and not pdir.adapters(99).exists()
    with db.session() as s:
        store.delete_user(s, store.get_labeler(s, "ann"))
    with pytest.raises(store.NotFound), db.session() as s:  # a run still training ann cannot publish her again
        store.publish_adapter(s, 1, 2, "adapters/u1/v0002/adapter", "none", 12, 12)
    with pdir.lock(), pytest.raises(Busy):
        run_personalize(cfg)
    assert run_personalize(cfg).shared_reason == "a user's feedback was removed"
    assert not pdir.adapters(1).exists() and not pdir.reward_part(1)[0].exists()  # swept as orphans


def test_cli_runs_once_and_a_second_run_at_the_same_time_exits(cfg, db, tokens, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.config import save_config

    chat_feedback(db, "ann", "great", 10, seed=1)
    save_config(cfg, tmp_path / "personalize.yaml")
    args = ["personalize", "-c", str(tmp_path / "personalize.yaml"), "--steps", "1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "shared reward v1: retrained" in done.output and "trained" in done.output
    assert live(db) == {1: (1, 10)}
    with PersonalDir.at(cfg.out_dir).lock():
        busy = CliRunner().invoke(app, args)
    assert busy.exit_code == 3 and "another" in busy.output


def test_the_optimizer_is_one_of_the_online_ones_and_cli_steps_reach_it():
    assert PersonalizeConfig().policy == PersonalizeConfig().rloo  # RLOO by default: no value head to learn per user
    assert PersonalizeConfig(optimizer="ppo").policy.max_steps == PersonalizeConfig().ppo.max_steps
    with pytest.raises(ValueError, match="optimizer must be rloo, ppo or grpo"):
        PersonalizeConfig(optimizer="dpo")
    cfg = load_config(PersonalizeConfig, None, ["optimizer=grpo", "grpo.max_steps=3"])
    assert cfg.policy.max_steps == 3 and cfg.policy.k == 4
