import dataclasses
import json

import pytest
import torch

from rlhf.config import load_config
from rlhf.generate import GenerateConfig, run_generate
from rlhf.generation import SamplingConfig, encode_prompts, filter_logits, position_ids_from_mask, sample

GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_top_p_and_top_k_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, top_p=0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5+0.3 crosses it
    assert filter_logits(logits, top_k=1).isfinite().tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("candidates", [2, 64, 256])
def test_nucleus_from_top_candidates_keeps_what_a_full_sort_keeps(monkeypatch, candidates):
    import rlhf.generation as generation

    monkeypatch.setattr(generation, "NUCLEUS_CANDIDATES", candidates)
    g = torch.Generator().manual_seed(0)
    # peaked rows (nucleus of a few tokens) and flat rows (nucleus larger than the candidates: the full sort)
    logits = torch.cat([torch.randn(3, 500, generator=g) * 6, torch.randn(3, 500, generator=g) * 0.1])
    for top_p in (0.5, 0.9, 0.95):
        srt, idx = torch.sort(logits, descending=True, dim=-1)
        p = srt.softmax(-1)
        keep_sorted = (p.cumsum(-1) - p) < top_p  # reference: the textbook full-sort nucleus
        ref = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, keep_sorted)
        got = filter_logits(logits, top_p=top_p)
        assert torch.equal(got.isfinite(), ref)
        assert torch.equal(got[ref], logits[ref])  # kept logits are unchanged
    assert int(ref[3:].sum(-1).min()) > candidates  # the flat rows really needed the fallback


def test_batched_left_padded_greedy_matches_one_by_one(tiny_lm):
    model, tok = tiny_lm
    texts = ["hi", "my house is too hot and i do not know what to do"]
    ids, mask = encode_prompts(tok, texts, 128)
    assert mask[0, 0] == 0  # the short prompt really is left-padded
    batched = sample(model, ids, mask, GREEDY, [tok.eos_token_id], tok.pad_token_id)
    for i, t in enumerate(texts):
        one_ids, one_mask = encode_prompts(tok, [t], 128)
        alone = sample(model, one_ids, one_mask, GREEDY, [tok.eos_token_id], tok.pad_token_id)
        n = int(alone.response_lengths[0])
        assert batched.responses[i, :n].tolist() == alone.responses[0, :n].tolist()
        # reference: HF generate without our cache handling
        ref = model.generate(one_ids, attention_mask=one_mask, max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        assert alone.responses[0, :n].tolist() == ref[0, one_ids.shape[1] : one_ids.shape[1] + n].tolist()


def test_sampling_draws_what_hf_generate_draws_at_the_same_seed(tiny_lm):
    # the preallocated KV cache and the sampler's maths: the same tokens as transformers' own loop
    model, tok = tiny_lm
    ids, mask = encode_prompts(tok, ["hi", "my house is too hot and i do not know what to do", "a b c"], 128)
    cfg = SamplingConfig(max_new_tokens=10, temperature=0.8, top_p=0.9)
    ours = sample(model, ids, mask, cfg, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    ref = model.generate(ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.9, top_k=0, max_new_tokens=10,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    for row, n, want in zip(ours.responses, ours.response_lengths.tolist(), ref):
        assert row[:n].tolist() == want[:n].tolist()


def test_sampler_logprobs_and_entropy_match_a_full_forward(tiny_lm):
    from rlhf.models.policy import CausalPolicy, response_hidden, response_logits
    from rlhf.policy.losses import logprobs_and_entropy

    model, tok = tiny_lm
    ids, mask = encode_prompts(tok, ["hi", "my house is too hot and i do not know what to do"], 128)
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.7)
    plain = sample(model, ids, mask, cfg, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(1))
    kept = sample(model, ids, mask, cfg, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(1),
                  with_logprobs=True)
    assert plain.logprobs is None and torch.equal(plain.sequences, kept.sequences)  # keeping them draws nothing
    model.lm_head.requires_grad_(False)  # frozen, as under LoRA: CausalPolicy takes the fused head path
    with torch.no_grad():
        out = CausalPolicy(model)(kept.sequences, kept.attention_mask, kept.prompt_len, with_entropy=True,
                                  temperature=0.7)
        h = response_hidden(model, kept.sequences, kept.attention_mask, kept.prompt_len)
        lp, ent = logprobs_and_entropy(response_logits(model, h), kept.responses, 0.7)
    m = kept.response_mask
    assert int(m.sum()) > 12 and bool((kept.logprobs[m.bool()] < 0).all())
    for got_lp, got_ent in ((lp, ent), (out.logprobs, out.entropy)):
        torch.testing.assert_close(kept.logprobs, got_lp * m, atol=1e-5, rtol=0)
        torch.testing.assert_close(kept.entropy, got_ent * m, atol=1e-5, rtol=0)


def test_rows_repeating_a_prompt_share_one_prefill_and_draw_the_same(tiny_lm, monkeypatch):
    # k samples per prompt (evaluate, RLOO/GRPO): each distinct prompt's prefill runs once, its cache repeated per row
    import rlhf.generation as generation
    import rlhf.models.policy as policy
    from rlhf.generation import shared_prompts
    from rlhf.models.policy import response_hidden

    model, tok = tiny_lm
    texts = [t for t in ("hi", "my house is too hot and i do not know what to do") for _ in range(3)] + ["a b c"]
    ids, mask = encode_prompts(tok, texts, 128)
    first, rows = shared_prompts(ids, mask)
    assert len(first) == 3 and rows.tolist() == [rows[0]] * 3 + [rows[3]] * 3 + [rows[6]]
    assert torch.equal(ids[first][rows], ids) and shared_prompts(ids[[0, 3, 6]], mask[[0, 3, 6]]) is None
    prefills = []
    hook = model.model.register_forward_hook(lambda m, a, kw, out: prefills.append(kw["input_ids"].shape), with_kwargs=True)
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.9)
    shared = sample(model, ids, mask, cfg, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(5), True)
    monkeypatch.setattr(generation, "shared_prompts", lambda *a: None)
    monkeypatch.setattr(policy, "shared_prompts", lambda *a: None)
    full = sample(model, ids, mask, cfg, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(5), True)
    hook.remove()
    assert prefills[0][0] == 3 and prefills[len(prefills) // 2][0] == 7  # 3 distinct prompts, then all 7 rows
    assert torch.equal(shared.sequences, full.sequences) and torch.equal(shared.response_mask, full.response_mask)
    torch.testing.assert_close(shared.logprobs, full.logprobs, atol=1e-6, rtol=0)
    assert len(set(map(tuple, shared.responses[:3].tolist()))) > 1  # the rows of one prompt still draw their own
    with torch.no_grad():
        want = response_hidden(model, full.sequences, full.attention_mask, full.prompt_len)
        monkeypatch.undo()
        got = response_hidden(model, full.sequences, full.attention_mask, full.prompt_len)  # the prompt once
    torch.testing.assert_close(got * full.response_mask[..., None], want * full.response_mask[..., None], atol=1e-5, rtol=0)


def test_a_shared_prompt_forward_gives_the_full_forwards_gradients(tiny_lm, monkeypatch):
    # DPO's chosen and rejected, RLOO's k samples: the prompt's forward once, its cache repeated; backward sums it back
    import rlhf.models.policy as policy
    from rlhf.models.policy import response_hidden

    model, tok = tiny_lm
    ids, mask = encode_prompts(tok, ["hi there", "hi there", "my house is too hot", "my house is too hot"], 64)
    resp = torch.tensor([[5, 6, 7], [8, 9, 0], [5, 5, 5], [10, 11, 12]])
    seq, attn = torch.cat([ids, resp], 1), torch.cat([mask, torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]])], 1)
    weight = torch.randn(4, 3, model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def grads():
        model.zero_grad()
        h = response_hidden(model, seq, attn, ids.size(1))  # (B, T, H)
        (h * weight * attn[:, ids.size(1):, None]).sum().backward()
        return h.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    h_shared, g_shared = grads()
    monkeypatch.setattr(policy, "shared_prompts", lambda *a: None)
    h_full, g_full = grads()
    model.zero_grad()
    m = attn[:, ids.size(1):, None]
    torch.testing.assert_close(h_shared * m, h_full * m, atol=1e-5, rtol=0)
    assert g_shared.keys() == g_full.keys() and len(g_full) > 5
    for name in g_full:
        torch.testing.assert_close(g_shared[name], g_full[name], atol=1e-4, rtol=1e-4, msg=name)


def test_eos_equal_to_pad_is_kept_in_the_response_mask(tiny_lm):
    model, tok = tiny_lm
    eos = tok.eos_token_id
    assert eos == tok.pad_token_id
    with torch.no_grad():  # make EOS the most likely token after 3 steps by biasing its logit
        model.lm_head.weight.data[eos] = 0
    ids, mask = encode_prompts(tok, ["hello there", "a"], 64)
    # Force EOS on step 2 for row 0 only: pick the EOS id as the sampled token through a tiny wrapper.
    calls = {"n": 0}
    real_forward = model.forward

    def forward(*a, **k):
        out = real_forward(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:  # the logits that choose the 3rd token
            out.logits[0, -1, :] = -1e9
            out.logits[0, -1, eos] = 1e9
        return out

    model.forward = forward
    out = sample(model, ids, mask, SamplingConfig(max_new_tokens=6, temperature=0.0), [eos], tok.pad_token_id)
    assert out.finished.tolist()[0] is True
    assert out.response_mask[0].tolist() == [1, 1, 1, 0, 0, 0]  # EOS (3rd token) is inside the mask
    assert out.responses[0, 2] == eos and int(out.response_lengths[0]) == 3
    assert out.response_mask[1].sum() >= 3


def test_run_generate_writes_and_resumes(tiny_lm_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt number {i}"}) + "\n" for i in range(5)))
    cfg = load_config(GenerateConfig, None, ["sampling.max_new_tokens=6", "split=null"], model=str(tiny_lm_dir), prompts=str(prompts),
                      out_dir=str(tmp_path / "out"), num_completions=3, batch_size=6)

    class Crash(Exception):
        pass

    def crash_after_first(done, total):
        if done >= 2:
            raise Crash

    with pytest.raises(Crash):
        run_generate(cfg, on_progress=crash_after_first)
    first = [json.loads(line) for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    assert len(first) == 2  # one batch = 6 sequences // 3 completions
    stats = run_generate(cfg)
    assert stats.prompts == 3 and stats.completions == 9 and stats.tokens > 0 and stats.tokens_per_s > 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(5)]
    assert rows[:2] == first  # earlier records untouched
    assert all(len(r["completions"]) == 3 and len(r["metadata"]["num_tokens"]) == 3 for r in rows)
    assert (tmp_path / "out" / "generate.yaml").exists()
    assert run_generate(cfg).completions == 0  # nothing left to do


def test_alt_completions_sample_their_slots_under_the_alt_system_prompt(tiny_lm_dir, tmp_path, monkeypatch):
    import rlhf.generator

    seen = []
    real = rlhf.generator.generate

    def spy(model, input_ids, attention_mask, *a, **k):  # noqa: ANN001, ANN202
        seen.append(input_ids.clone())
        return real(model, input_ids, attention_mask, *a, **k)

    monkeypatch.setattr(rlhf.generator, "generate", spy)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt number {i}"}) + "\n" for i in range(2)))
    cfg = load_config(GenerateConfig, None, ["sampling.max_new_tokens=4", "split=null"], model=str(tiny_lm_dir),
                      prompts=str(prompts), out_dir=str(tmp_path / "out"), num_completions=3, batch_size=6,
                      system_prompt="Be kind.", alt_completions=1, alt_system_prompt="Be blunt.")
    run_generate(cfg)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    texts = [tok.decode(row, skip_special_tokens=True) for row in seen[0]]
    assert [("Be blunt." in t, "Be kind." in t) for t in texts] == [(False, True), (False, True), (True, False)] * 2
    rows = [json.loads(line) for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    assert all(r["metadata"]["alt_system"] == [False, False, True] for r in rows)
    with pytest.raises(ValueError, match="alt_completions must be in"):
        GenerateConfig(num_completions=2, alt_completions=2)
    with pytest.raises(ValueError, match="would not differ"):
        run_generate(dataclasses.replace(cfg, alt_system_prompt="Be kind."))


@pytest.mark.slow
def test_default_model_converts_and_generates(tmp_path):
    from rlhf.generation import decode_responses
    from rlhf.models.registry import cache_dir, load_causal_lm

    model, tok = load_causal_lm("smollm2-135m-instruct")
    folder = cache_dir() / "models" / "smollm2-135m-instruct"
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert tok.pad_token_id == tok.eos_token_id  # the quirk the sampler must handle
    ids, mask = encode_prompts(tok, ["What is the capital of France?"], 128)
    out = sample(model, ids, mask, SamplingConfig(max_new_tokens=12, temperature=0.0), [tok.eos_token_id], tok.pad_token_id)
    text = decode_responses(tok, out)[0]
    assert "Paris" in text, text
