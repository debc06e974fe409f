import contextlib

import pytest
import torch

from rlhf.models.lora import LoraSettings, apply_lora, merged_for_sampling
from rlhf.models.reference import ReferencePolicy
from rlhf.models.value_head import PolicyWithValueHead
from rlhf.policy.losses import entropy_from_logits, logprobs_and_entropy, logprobs_from_logits
from tiny import tiny_llama


def _lora_with_nonzero_update(tok):
    model = apply_lora(tiny_llama(len(tok)), LoraSettings(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model


def test_merged_sampling_matches_the_adapter_and_restores_weights_exactly(tiny_tok):
    model = _lora_with_nonzero_update(tiny_tok)
    ids = tiny_tok(["hot house", "thank you"], return_tensors="pt", padding=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        want = model(**ids).logits
        with merged_for_sampling(model):
            merged = model(**ids).logits
        again = model(**ids).logits
    torch.testing.assert_close(merged, want, rtol=1e-4, atol=1e-5)
    assert torch.equal(again, want)  # adapter path back on
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # base weights bit-identical: no merge/unmerge drift


def test_value_head_is_zero_initialised_and_shares_the_forward(tiny_tok):
    model = PolicyWithValueHead(_lora_with_nonzero_update(tiny_tok))
    ids = tiny_tok(["hot house", "the quick brown fox"], return_tensors="pt", padding=True)
    seq = torch.cat([ids["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 10]])], dim=1)
    attn = torch.cat([ids["attention_mask"], torch.ones(2, 3, dtype=torch.long)], dim=1)
    P = ids["input_ids"].shape[1]
    out = model(seq, attn, P, with_entropy=True, temperature=0.7)
    assert out.logprobs.shape == (2, 3) and out.values.shape == (2, 3)
    assert torch.equal(out.values, torch.zeros(2, 3))
    # the response log-probs come from the full model's logits at positions P-1 .. P+T-2
    full = model.lm(input_ids=seq, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    want_lp, want_ent = logprobs_and_entropy(full[:, P - 1 : -1], seq[:, P:], 0.7)
    torch.testing.assert_close((out.logprobs, out.entropy), (want_lp, want_ent), rtol=1e-5, atol=1e-5)
    # the reference is the same weights with the adapter off
    ref = ReferencePolicy(model.policy).logprobs(seq, attn, P)
    with model.policy.disable_adapter(), torch.no_grad():
        base = model(seq, attn, P, with_values=False).logprobs
    assert torch.equal(ref, base)
    assert not torch.equal(ref, model(seq, attn, P).logprobs.detach())


def test_logprobs_and_entropy_share_one_logsumexp():
    g = torch.Generator().manual_seed(0)
    logits, tok = torch.randn(2, 5, 11, generator=g) * 3, torch.randint(0, 11, (2, 5), generator=g)
    lp, ent = logprobs_and_entropy(logits, tok, 0.7)
    torch.testing.assert_close(lp, logprobs_from_logits(logits, tok, 0.7))
    torch.testing.assert_close(ent, entropy_from_logits(logits, 0.7))
    with torch.no_grad():  # the in-place no-grad path gives the same numbers
        lp2, ent2 = logprobs_and_entropy(logits, tok, 0.7)
    torch.testing.assert_close((lp2, ent2), (lp, ent))


def test_response_logits_use_one_matmul_with_a_frozen_head(tiny_tok):
    # a strided slice through a frozen LM head makes torch.matmul fall back to bmm with the weight expanded per row
    from rlhf.models.policy import response_hidden, response_logits

    model = _lora_with_nonzero_update(tiny_tok)
    assert not model.get_output_embeddings().weight.requires_grad
    ids = tiny_tok(["hot house", "the quick brown fox"], return_tensors="pt", padding=True)
    seq = torch.cat([ids["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 10]])], dim=1)
    attn = torch.cat([ids["attention_mask"], torch.ones(2, 3, dtype=torch.long)], dim=1)
    P = ids["input_ids"].shape[1]
    with torch.no_grad(), torch.profiler.profile() as prof:
        logits = response_logits(model, response_hidden(model, seq, attn, P))
    ops = {e.key for e in prof.key_averages()}
    assert "aten::bmm" not in ops  # the tiny model's attention is SDPA: no other bmm
    with torch.no_grad():
        full = model(input_ids=seq, attention_mask=attn).logits[:, P - 1 : -1]
    assert logits.shape == (2, 3, model.config.vocab_size)
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-5)


def test_fused_gelu_computes_the_same_function_and_gradients():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import GELUTanh, NewGELUActivation

    from rlhf.models.fused import fuse_activations

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    fused = GPT2LMHeadModel(model.config).eval()
    fused.load_state_dict(model.state_dict())
    assert fuse_activations(fused) == 2 and fuse_activations(fused) == 0  # one per block; idempotent
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    assert sum(isinstance(m, GELUTanh) for m in fused.modules()) == 2
    ids = torch.randint(0, 64, (3, 12))
    want, got = model(input_ids=ids).logits, fused(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    want.square().mean().backward()
    got.square().mean().backward()
    for (n, a), (_, b) in zip(model.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=n)


def _lora_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf.models.fused import fuse_activations

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    fuse_activations(model)
    model = apply_lora(model, LoraSettings(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_recomputed_activations_give_the_same_gradients_and_free_the_outputs(tiny_tok, monkeypatch, arch):
    import weakref

    import rlhf.models.policy as mp
    from rlhf.models.fused import _activation_types

    model = _lora_gpt2() if arch == "gpt2" else _lora_with_nonzero_update(tiny_tok)
    V = model.get_output_embeddings().weight.size(0)
    ids = torch.randint(3, V, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    acts = [m for m in model.modules() if isinstance(m, _activation_types())]
    assert len(acts) == 2  # one per block

    def run():
        outs = []
        hooks = [m.register_forward_hook(lambda m, i, o: outs.append(weakref.ref(o))) for m in acts]
        h = mp.response_hidden(model, ids, mask, 5)  # (3, 7, H)
        loss = h.square().mean()
        for hook in hooks:
            hook.remove()
        alive = sum(o() is not None for o in outs)  # the graph still holds what autograd saved
        model.zero_grad(set_to_none=True)
        loss.backward()
        return alive, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    alive, grads = run()
    monkeypatch.setattr(mp, "recompute_activations", lambda trunk: contextlib.nullcontext())
    alive_kept, want = run()
    # without recomputing, the LoRA layer after each activation keeps its output (SiLU's also feeds Llama's gate
    # product, which saves it too); with it, none survives the forward pass
    assert (alive, alive_kept) == (0, 2)
    assert grads.keys() == want.keys() and len(want) > 0
    for n in want:
        assert torch.equal(grads[n], want[n]), n  # bit for bit: the same kernel recomputes the same values


def test_build_policy_fuses_a_model_passed_in():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import NewGELUActivation

    from rlhf.policy import RLOOConfig
    from rlhf.policy.train import build_policy

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    policy, _ = build_policy(RLOOConfig(), model=model, tokenizer=object())
    assert not any(isinstance(m, NewGELUActivation) for m in policy.modules())


def test_fused_head_logprobs_match_the_logits_path_without_keeping_the_logits():
    from rlhf.models.fused import head_logprobs

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(6, 11, bias=True).requires_grad_(False)
    torch.nn.init.normal_(head.weight, std=2.0, generator=g)
    h0, tok = torch.randn(2, 5, 6, generator=g), torch.randint(0, 11, (2, 5), generator=g)
    g_lp, g_ent = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)  # arbitrary upstream gradients
    h = h0.clone().requires_grad_(True)
    lp, ent = logprobs_and_entropy(head(h), tok, 0.7)
    want = (lp, ent, *torch.autograd.grad((lp * g_lp + ent * g_ent).sum(), h))
    saved = []
    h = h0.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        lp, ent = head_logprobs(h, head, tok, 0.7, with_entropy=True, rows=3)  # 10 rows in chunks of 3, 3, 3, 1
    got = (lp, ent, *torch.autograd.grad((lp * g_lp + ent * g_ent).sum(), h))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert saved and all(11 not in shape for shape in saved)  # two (N, H) rows, never (N, V)
    with torch.no_grad():
        assert torch.equal(head_logprobs(h, head, tok, 0.7, rows=3)[0], lp.detach())
    head.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen LM head"):
        head_logprobs(h, head, tok)


def test_rollout_trunk_states_cover_every_row_when_rows_share_a_prompt(tiny_tok, monkeypatch):
    # PPO's values from the sampler's trunk states: with a shared prefill the first call holds one row per prompt
    import rlhf.generation as generation
    from rlhf.generation import SamplingConfig
    from rlhf.models.policy import CausalPolicy
    from rlhf.policy.core import generate_rollout

    from helpers import TEXTS, tiny_policy

    policy = CausalPolicy(tiny_policy(tiny_tok)).eval()
    prompts = [t for t in TEXTS[:3] for _ in range(2)]
    cfg = SamplingConfig(max_new_tokens=6, temperature=1.0, backend="hf")

    def rollout():
        return generate_rollout(policy, tiny_tok, prompts, cfg, 64, generator=torch.Generator().manual_seed(0),
                                with_logprobs=True, with_hidden=True)

    shared = rollout()
    monkeypatch.setattr(generation, "shared_prompts", lambda *a: None)
    full = rollout()
    assert shared.hidden is not None and shared.hidden.shape == full.hidden.shape
    assert torch.equal(shared.sequences, full.sequences)
    torch.testing.assert_close(shared.hidden, full.hidden, atol=1e-6, rtol=0)
