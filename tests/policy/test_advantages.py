import math

import pytest
import torch

from rlhf.policy.advantages import compute_gae, grpo_advantages, rloo_advantages, whiten_advantages


def reference_gae(rewards, values, lengths, gamma, lam):
    """Plain per-episode loop, as written in the GAE paper."""
    B, T = rewards.shape
    adv = torch.zeros(B, T)
    for b in range(B):
        n = lengths[b]
        last = 0.0
        for t in reversed(range(n)):
            next_v = values[b, t + 1].item() if t + 1 < n else 0.0
            delta = rewards[b, t].item() + gamma * next_v - values[b, t].item()
            last = delta + gamma * lam * last
            adv[b, t] = last
    ret = torch.zeros(B, T)
    for b in range(B):
        ret[b, : lengths[b]] = adv[b, : lengths[b]] + values[b, : lengths[b]]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_reference_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    lengths = [5, 1, 3, 7]
    rewards, values = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    mask = torch.zeros(4, 7)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = reference_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_gae_by_hand():
    # one episode of 2 tokens: r = (0, 1), V = (0.5, 0.25), gamma = 1, lam = 0.5
    adv, ret = compute_gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 0.5)
    # delta_1 = 1 - 0.25 = 0.75; delta_0 = 0 + 0.25 - 0.5 = -0.25; A_0 = -0.25 + 0.5 * 0.75 = 0.125
    assert adv[0].tolist() == pytest.approx([0.125, 0.75])
    assert ret[0].tolist() == pytest.approx([0.625, 1.0])


def test_whitening_over_real_tokens_only():
    adv = torch.tensor([[1.0, 2.0, 50.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    w = whiten_advantages(adv, mask)
    assert w[mask.bool()].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert w[~mask.bool()].tolist() == [0.0, 0.0, 0.0]


def plain_group_advantages(rewards: list[float], k: int, kind: str, scale: bool = True) -> list[float]:
    """RLOO / GRPO advantages with Python loops over groups and members, straight from the papers."""
    out = []
    for start in range(0, len(rewards), k):
        group = rewards[start : start + k]
        mean = sum(group) / k
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (k - 1))
        for i, r in enumerate(group):
            if kind == "rloo":
                others = [x for j, x in enumerate(group) if j != i]
                out.append(r - sum(others) / len(others))
            else:
                out.append((r - mean) / (std + 1e-4) if scale else r - mean)
    return out


@pytest.mark.parametrize("k", [2, 3, 4])
def test_rloo_and_grpo_advantages_match_a_plain_loop(k):
    g = torch.Generator().manual_seed(k)
    rewards = torch.randn(4 * k, generator=g, dtype=torch.float64)
    r = rewards.tolist()
    torch.testing.assert_close(rloo_advantages(rewards, k).tolist(), plain_group_advantages(r, k, "rloo"))
    torch.testing.assert_close(grpo_advantages(rewards, k).tolist(), plain_group_advantages(r, k, "grpo"))
    torch.testing.assert_close(grpo_advantages(rewards, k, scale=False).tolist(), plain_group_advantages(r, k, "grpo", False))


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0])  # two groups of 3
    # RLOO: 1 - (2+3)/2 = -1.5, 2 - 2 = 0, 3 - 1.5 = 1.5; second group: 6 - 0 = 6, 0 - 3 = -3, -3
    assert rloo_advantages(rewards, 3).tolist() == [-1.5, 0.0, 1.5, 6.0, -3.0, -3.0]
    # GRPO: group 1 has mean 2, std 1 -> (-1, 0, 1) / (1 + 1e-4); group 2 mean 2, std sqrt(12)
    a = grpo_advantages(rewards, 3)
    assert a[:3].tolist() == pytest.approx([-1 / 1.0001, 0.0, 1 / 1.0001])
    assert a[3:].tolist() == pytest.approx([4 / (math.sqrt(12) + 1e-4), -2 / (math.sqrt(12) + 1e-4), -2 / (math.sqrt(12) + 1e-4)])
    # a group whose completions all score the same carries no signal: every advantage is 0
    assert grpo_advantages(torch.tensor([0.7, 0.7]), 2).tolist() == [0.0, 0.0]
    assert rloo_advantages(torch.tensor([0.7, 0.7]), 2).tolist() == [0.0, 0.0]


def test_group_advantages_refuse_a_batch_that_is_not_whole_groups():
    with pytest.raises(ValueError, match="multiple of k"):
        rloo_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="multiple of k"):
        grpo_advantages(torch.zeros(4), 1)
