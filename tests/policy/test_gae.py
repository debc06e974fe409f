import pytest
import torch

from rlhf.policy.advantages import compute_gae, whiten_advantages


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
