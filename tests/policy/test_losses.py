import math

import pytest
import torch

from rlhf.policy.losses import (
    clipped_value_loss, dpo_losses, entropy_from_logits, explained_variance, implicit_rewards, kl_per_token,
    logprobs_from_logits, masked_mean, masked_var, masked_whiten, ppo_policy_loss, sequence_logprobs,
    sequence_policy_loss, shaped_rewards,
)
from rlhf.policy.core import process_scores

MASK = torch.tensor([[1.0, 1.0, 0.0]])


def test_masked_mean_var_whiten_ignore_padding():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    assert masked_mean(x, MASK).item() == 2.0
    assert masked_var(x, MASK).item() == 2.0  # ((1-2)^2 + (3-2)^2) / (2 - 1)
    assert masked_var(x, MASK, unbiased=False).item() == 1.0
    w = masked_whiten(x, MASK)
    assert w[0, :2].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], abs=1e-6)
    assert w[0, 2].item() == 0.0
    assert masked_whiten(x, MASK, shift_mean=False)[0, :2].tolist() == pytest.approx([2 - 1 / math.sqrt(2), 2 + 1 / math.sqrt(2)], abs=1e-6)


def test_logprobs_and_entropy_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = (0.25, 0.75)
    tok = torch.tensor([[1]])
    assert logprobs_from_logits(logits, tok).item() == pytest.approx(math.log(0.75))
    # temperature 2: z / 2 = (0, ln 3 / 2) -> p1 = sqrt(3) / (1 + sqrt(3))
    assert logprobs_from_logits(logits, tok, 2.0).item() == pytest.approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_from_logits(logits).item() == pytest.approx(h)
    assert entropy_from_logits(torch.zeros(1, 1, 7)).item() == pytest.approx(math.log(7))


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])  # log r = ln 0.5
    assert kl_per_token(lp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_per_token(lp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_per_token(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))
    assert kl_per_token(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError):
        kl_per_token(lp, ref, "k4")  # type: ignore[arg-type]


def test_ppo_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 1.5, 50.0]]))  # ratios 1.5, 1.5, (padding)
    adv = torch.tensor([[1.0, -1.0, 9.0]])
    out = ppo_policy_loss(new, old, adv, MASK, clip_range=0.2)
    # A=+1: max(-1.5, -1.2) = -1.2 (clipped); A=-1: max(1.5, 1.2) = 1.5 (unclipped)
    assert out.loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert out.clipfrac.item() == 0.5
    assert out.approx_kl.item() == pytest.approx(0.5 * math.log(1.5) ** 2)
    assert out.ratio[0, :2].tolist() == pytest.approx([1.5, 1.5])


def test_ppo_policy_loss_gradient_vanishes_when_clipped():
    new = torch.log(torch.tensor([[1.5, 0.9]])).requires_grad_(True)
    out = ppo_policy_loss(new, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), 0.2)
    out.loss.backward()
    assert new.grad[0, 0].item() == 0.0  # ratio 1.5 > 1.2 with A > 0: clipped, no gradient
    assert new.grad[0, 1].item() == pytest.approx(-0.9 / 2)  # d(-A r)/d log r = -A r, averaged over 2 tokens


def test_clipped_value_loss_by_hand():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1, 7.0]])
    ret = torch.tensor([[2.0, 1.0, 0.0]])
    out = clipped_value_loss(new, old, ret, MASK, clip_range=0.2)
    # token 0: (1-2)^2 = 1 vs clipped (0.2-2)^2 = 3.24 -> 3.24; token 1: (0.1-1)^2 = 0.81 both
    assert out.loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2)
    assert out.clipfrac.item() == 0.5


def test_shaped_rewards_put_score_on_last_real_token():
    kl = torch.tensor([[0.5, 1.0, 2.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = shaped_rewards(torch.tensor([3.0, -1.0]), kl, mask, beta=0.1)
    assert r[0].tolist() == pytest.approx([-0.05, -0.1, 3.0 - 0.2])
    assert r[1].tolist() == pytest.approx([-1.0 - 0.1, 0.0, 0.0])


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    m = torch.ones(1, 4)
    assert explained_variance(ret, ret, m).item() == 1.0
    assert explained_variance(torch.full_like(ret, 2.5), ret, m).item() == pytest.approx(0.0)


def test_process_scores():
    raw = torch.tensor([1.0, 3.0])
    fin = torch.tensor([True, False])
    assert process_scores(raw, fin, normalization=(1.0, 2.0)).tolist() == [0.0, 1.0]
    assert process_scores(raw, fin, missing_eos_penalty=0.5).tolist() == [1.0, 2.5]
    assert process_scores(raw, fin, clip=2.0).tolist() == [1.0, 2.0]
    assert process_scores(raw, fin, whiten=True).tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], abs=1e-6)


def test_ppo_policy_loss_sequence_aggregation_weighs_responses_equally():
    # response 0 has 2 tokens with per-token loss -1 each, response 1 has 1 token with loss -4 (ratio 1, no clip)
    adv = torch.tensor([[1.0], [4.0]])  # (B, 1): one advantage per sequence, broadcast over tokens
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    zeros = torch.zeros(2, 2)
    assert ppo_policy_loss(zeros, zeros, adv, mask, 0.2, "sequence").loss.item() == pytest.approx((-1 + -4) / 2)
    assert ppo_policy_loss(zeros, zeros, adv, mask, 0.2, "token").loss.item() == pytest.approx((-1 - 1 - 4) / 3)


def test_sequence_policy_loss_by_hand():
    # sequence ratios: exp(ln 1.5 + 0) = 1.5 (A = +1, clipped at 1.2) and exp(ln 0.5) = 0.5 (A = +2, unclipped side)
    new = torch.log(torch.tensor([[1.5, 1.0], [0.5, 9.0]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = sequence_policy_loss(new, torch.zeros(2, 2), torch.tensor([1.0, 2.0]), mask, 0.2)
    # A=+1: max(-1.5, -1.2) = -1.2; A=+2: max(-2 * 0.5, -2 * 0.8) = -1.0
    assert out.loss.item() == pytest.approx((-1.2 - 1.0) / 2)
    assert out.clipfrac.item() == 0.5
    assert out.ratio.tolist() == pytest.approx([1.5, 0.5])
    # at ratio 1 the gradient is REINFORCE on the whole sequence: d/d logp_t = -A / B for every real token
    lp = torch.zeros(2, 2, requires_grad=True)
    sequence_policy_loss(lp, torch.zeros(2, 2), torch.tensor([1.0, 2.0]), mask, 0.2).loss.backward()
    assert lp.grad.tolist() == [[-0.5, -0.5], [-1.0, 0.0]]


def test_dpo_losses_by_hand():
    pc, pr = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    # h = (pc - rc) - (pr - rr) = (0.5 - (-0.5), -1 - 1) = (1, -2)
    beta = 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = [-math.log(sig(0.5)), -math.log(sig(-1.0))]
    assert dpo_losses(pc, pr, rc, rr, beta).tolist() == pytest.approx(want)
    eps = 0.1
    want_c = [-(1 - eps) * math.log(sig(b)) - eps * math.log(sig(-b)) for b in (0.5, -1.0)]
    assert dpo_losses(pc, pr, rc, rr, beta, "sigmoid", eps).tolist() == pytest.approx(want_c)
    # IPO: (h - 1 / (2 beta))^2 = (1 - 1)^2, (-2 - 1)^2
    assert dpo_losses(pc, pr, rc, rr, beta, "ipo").tolist() == pytest.approx([0.0, 9.0])
    # policy == reference: h = 0, the loss is log 2 and the implicit rewards are 0
    assert dpo_losses(rc, rr, rc, rr, beta).tolist() == pytest.approx([math.log(2)] * 2)
    assert implicit_rewards(pc, rc, beta).tolist() == pytest.approx([0.25, -0.5])
    with pytest.raises(ValueError):
        dpo_losses(pc, pr, rc, rr, beta, "hinge")  # type: ignore[arg-type]


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = torch.tensor([-2.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    dpo_losses(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), 0.1).sum().backward()
    # d/dh -log sigma(beta h) at h = 0 is -beta / 2
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)


def test_sequence_logprobs_sum_or_mean_over_real_tokens():
    lp = torch.tensor([[-1.0, -2.0, -7.0], [-4.0, -9.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert sequence_logprobs(lp, mask).tolist() == [-3.0, -4.0]
    assert sequence_logprobs(lp, mask, average=True).tolist() == [-1.5, -4.0]
