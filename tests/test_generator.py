"""The Generator interface: the default backend is the KV-cache sampler; the vLLM backend's weight sync and
output packing, run against a stand-in engine (vllm and a GPU are not available here)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhf import generator as G
from rlhf.generation import SamplingConfig, encode_prompts, sample
from rlhf.models.lora import LoraSettings, apply_lora
from tiny import tiny_llama

sys.path.insert(0, str(Path(__file__).parent / "policy"))

SAMPLING = SamplingConfig(max_new_tokens=6, temperature=1.0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is far faster when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_backend_is_the_kv_cache_sampler(tiny_lm):
    model, tok = tiny_lm
    ids, mask = encode_prompts(tok, ["hot house", "the quick brown fox"], 64)
    ref = sample(model, ids, mask, SAMPLING, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(3))
    for backend in ("auto", "hf"):
        cfg = SamplingConfig(max_new_tokens=6, temperature=1.0, backend=backend)
        out = G.generate(model, ids, mask, cfg, [tok.eos_token_id], tok.pad_token_id, torch.Generator().manual_seed(3))
        assert torch.equal(out.sequences, ref.sequences) and torch.equal(out.response_mask, ref.response_mask)
    assert G.generator_for(model, "auto").name == "hf"  # no vllm / no GPU on this machine


def test_vllm_without_vllm_or_gpu_is_refused():
    with pytest.raises(RuntimeError, match="vllm needs the `vllm` package and a CUDA GPU"):
        G.resolve_backend("vllm")
    with pytest.raises(ValueError, match="auto, hf or vllm"):
        G.resolve_backend("tgi")


def lora_policy(vocab: int):
    peft = apply_lora(tiny_llama(vocab), LoraSettings(r=4))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # a trained adapter: B != 0
    return peft


def test_merged_weights_are_base_names_with_lora_folded_in(tiny_tok):
    peft = lora_policy(len(tiny_tok))
    merged = dict(G.merged_weights(peft.get_base_model()))
    expected = dict(copy.deepcopy(peft).merge_and_unload().named_parameters())
    assert merged.keys() == expected.keys() == dict(tiny_llama(len(tiny_tok)).named_parameters()).keys()
    for name, t in expected.items():
        torch.testing.assert_close(merged[name], t, rtol=0, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], peft.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)


class FakeLLM:
    """Stands in for `vllm.LLM`: holds its own copy of the model, loaded only through `load_weights`, and samples
    with the KV-cache sampler from it; records what it was asked."""

    def __init__(self, vocab: int, eos: int, pad: int):
        self.model = tiny_llama(vocab, seed=99)  # different weights until synced
        self.eos, self.pad, self.calls, self.resets = eos, pad, [], 0
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self.load_weights))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)))

    def load_weights(self, weights):
        params = dict(self.model.named_parameters())
        weights = list(weights)
        assert {n for n, _ in weights} == params.keys()  # vLLM loads by the base checkpoint's names
        with torch.no_grad():
            for n, t in weights:
                params[n].copy_(t)

    def reset_prefix_cache(self):
        self.resets += 1

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params))
        outs = []
        for p, sp in zip(prompts, params):
            ids = torch.tensor([p["prompt_token_ids"]])
            cfg = SamplingConfig(max_new_tokens=sp["max_tokens"], temperature=sp["temperature"])
            o = sample(self.model, ids, torch.ones_like(ids), cfg, sp["stop_token_ids"], self.pad,
                       torch.Generator().manual_seed(sp["seed"]))
            toks = o.responses[0, : int(o.response_lengths[0])].tolist()
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=toks)]))
        return outs


def test_vllm_generator_packs_outputs_like_the_sampler(tiny_tok):
    eos, pad = tiny_tok.eos_token_id, tiny_tok.pad_token_id
    ids = torch.tensor([[pad, pad, 5, 6], [7, 8, 9, 10], [pad, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    asked = []
    engine = SimpleNamespace(generate=lambda prompts, params, use_tqdm: asked.extend(prompts) or [
        SimpleNamespace(outputs=[SimpleNamespace(token_ids=[11, eos], finish_reason="stop")]),
        SimpleNamespace(outputs=[SimpleNamespace(token_ids=[12, 13, 14], finish_reason="length")]),
        SimpleNamespace(outputs=[SimpleNamespace(token_ids=(15,), finish_reason="stop")]),  # stop token left out
    ])
    seen = []
    gen = G.VLLMGenerator(engine, params=lambda **kw: seen.append(kw) or kw)
    out = gen.generate(None, ids, mask, SAMPLING, [eos], pad, torch.Generator().manual_seed(0))
    assert [p["prompt_token_ids"] for p in asked] == [[5, 6], [7, 8, 9, 10], [7, 8, 9]]  # left padding dropped
    assert [s["stop_token_ids"] for s in seen] == [[eos]] * 3 and seen[0]["top_k"] == -1
    assert len({s["seed"] for s in seen}) == 3
    assert out.responses.tolist() == [[11, eos, pad], [12, 13, 14], [15, eos, pad]]
    assert out.response_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0]] and out.finished.tolist() == [True, False, True]
    assert out.attention_mask[:2].tolist() == [[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]] and out.prompt_len == 4


def test_ppo_rollouts_come_from_the_engine_and_it_gets_each_update(tmp_path, tiny_tok, monkeypatch):
    from helpers import PROMPTS, count_e, tiny_cfg, tiny_policy

    from rlhf.policy.train import train_policy

    monkeypatch.setattr(G, "vllm_available", lambda: True)
    model = tiny_policy(tiny_tok)
    fake = FakeLLM(len(tiny_tok), tiny_tok.eos_token_id, tiny_tok.pad_token_id)
    engine = G.VLLMGenerator(fake, params=dict)
    original = G.generator_for

    def generator_for(m, backend="auto"):  # the first model to ask gets the engine, loaded once as from_model does
        if G.resolve_backend(backend) == "vllm" and m not in G._ENGINES:
            engine.sync_weights(m)
            G._ENGINES[m] = engine
        return original(m, backend)

    monkeypatch.setattr(G, "generator_for", generator_for)
    cfg = tiny_cfg(tmp_path, "sampling.backend=vllm", "max_steps=2")
    res = train_policy(cfg, count_e, model=model, tokenizer=tiny_tok, prompts=PROMPTS)

    assert G._ENGINES.get(res.model.lm) is engine  # the policy's LM is what asked for it
    assert len(fake.calls) == 2 and len(fake.calls[0][0]) == cfg.batch_size  # every rollout came from the engine
    assert engine.syncs == 3 and fake.resets == 3  # loaded once, then after each of the 2 updates
    final = dict(G.merged_weights(res.model.lm))  # the engine holds the trained policy, LoRA merged
    for n, p in fake.model.named_parameters():
        torch.testing.assert_close(p, final[n], rtol=0, atol=1e-6)
    assert res.history[-1]["reward/raw_mean"] >= 0
