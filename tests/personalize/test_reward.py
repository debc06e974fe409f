"""The per-user reward on a synthetic two-group preference: personalised separates the groups, shared cannot."""

from __future__ import annotations

import pytest
import torch
from personal_helpers import taste_pairs

from rlhf.personalize.config import PersonalRewardConfig
from rlhf.personalize.data import Thumb, UserFeedback
from rlhf.personalize.reward import (
    PersonalRewardModel, _pair_diffs, fit_user_part, fit_user_weights, load_user_part, pair_accuracy, save_user_part,
    train_shared,
)
from rlhf.reward.functions import load_reward_function


def user(uid: int, name: str, likes: str, n: int, held: int, seed: int) -> UserFeedback:
    pairs = taste_pairs(n + held, likes, seed, uid)
    return UserFeedback(uid, name, pairs=pairs[:n], heldout_pairs=pairs[n:], last_judgement_id=seed * 1000 + n)


@pytest.fixture(scope="module", params=[False, True], ids=["frozen-trunk", "trained-trunk"])
def trained(request, tiny_bert_dir):
    """Two users per taste: 'great' lovers (1, 2) and 'awful' lovers (3, 4), 24 pairs each."""
    torch.set_num_threads(1)
    users = {1: user(1, "ann", "great", 24, 20, 1), 2: user(2, "amy", "great", 24, 20, 2),
             3: user(3, "bob", "awful", 24, 20, 3), 4: user(4, "ben", "awful", 24, 20, 4)}
    cfg = PersonalRewardConfig(trunk=str(tiny_bert_dir), rank=2, train_trunk=request.param, epochs=6, batch_size=8,
                               lr=1e-3, head_lr=2e-2, max_length=32)
    return train_shared(users, cfg, version=1), users


def test_personal_reward_separates_conflicting_groups_and_shared_cannot(trained):
    model, users = trained
    own, shared = {}, {}
    for uid, u in users.items():
        part = fit_user_part(model, u, prior=1.0)
        own[uid], shared[uid] = part.heldout["accuracy"], part.heldout["shared_accuracy"]
        assert part.heldout["pairs"] == 20
    assert min(own.values()) >= 0.9, own  # each user's own reward ranks their held-out choices
    # one reward for everyone: what it gains on one group it loses on the other (held-out pairs are mirror images)
    assert abs((shared[1] + shared[3]) / 2 - 0.5) <= 0.15 and abs((shared[2] + shared[4]) / 2 - 0.5) <= 0.15, shared
    assert min(shared.values()) <= 0.65, shared


def test_new_user_from_a_handful_of_pairs_and_fallback_without_any(trained):
    model, _ = trained
    newbie = user(9, "cat", "awful", 6, 30, 9)  # six pairs, basis frozen
    part = fit_user_part(model, newbie, prior=1.0)
    assert part.heldout["accuracy"] >= 0.85, part.heldout
    nobody = fit_user_part(model, UserFeedback(10, "dan"), prior=1.0)
    assert torch.equal(nobody.w, model.shared.detach())  # no pairs: exactly the shared reward


def test_thumbs_move_a_users_weights():
    # one basis reward says "has great": thumbs up on great replies, down on awful ones -> positive weight
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.1, 1.0]])
    labels = torch.tensor([1.0, -1.0, 1.0, -1.0])
    w, b = fit_user_weights(torch.empty(0, 2), feats, labels, torch.zeros(2), prior=0.1)
    assert w[0] > 0.5 and w[1] < -0.5
    w_prior, _ = fit_user_weights(torch.empty(0, 2), feats, labels, torch.zeros(2), prior=1e4)
    assert w_prior.abs().max() < 1e-3  # a strong prior keeps the shared weights


def test_rm_user_spec_plugs_into_reward_functions(trained, tmp_path, caplog):
    model, users = trained
    folder = model.save(tmp_path / "reward")
    part = fit_user_part(model, users[3], prior=1.0)
    save_user_part(folder, part)
    assert load_user_part(folder, "bob").w.tolist() == part.w.tolist() == load_user_part(folder, "u3").w.tolist()
    held = users[3].heldout_pairs
    for spec in (f"rm-user:{folder}:bob", f"rm-user:{tmp_path}:u3"):  # the reward folder or the personal folder
        fn = load_reward_function(spec)
        r_c, r_r = fn([p.prompt for p in held], [p.chosen for p in held]), fn([p.prompt for p in held], [p.rejected for p in held])
        assert r_c.shape == (len(held),) and fn.personal
        assert float((r_c > r_r).float().mean()) == pytest.approx(part.heldout["accuracy"])
        assert fn.normalization == part.normalization
    with caplog.at_level("WARNING"):
        fallback = load_reward_function(f"rm-user:{folder}:zoe")
    assert not fallback.personal and "using the shared reward" in caplog.text
    assert torch.equal(fallback.w, PersonalRewardModel.load(folder).shared.detach())
    with pytest.raises(ValueError, match="name the user"):
        load_reward_function(str(folder))  # not a plain reward model: its head means nothing alone
    with pytest.raises(FileNotFoundError):
        load_reward_function(f"rm-user:{tmp_path}/nowhere:bob")


def test_pair_diffs_and_accuracy_are_consistent(trained):
    model, users = trained
    d = _pair_diffs(model, users[1].heldout_pairs)
    r = model.score([p.prompt for p in users[1].heldout_pairs], [p.chosen for p in users[1].heldout_pairs])
    r2 = model.score([p.prompt for p in users[1].heldout_pairs], [p.rejected for p in users[1].heldout_pairs])
    assert torch.allclose(d @ model.shared.detach(), r - r2, atol=1e-5)
    assert pair_accuracy(d, model.shared.detach()) == pytest.approx(float((r > r2).float().mean()))
