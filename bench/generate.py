"""Tokens/s of `rlhf generate`'s batched sampler vs plain `transformers` `generate`, same settings, one run.

    .venv/bin/python bench/generate.py [--prompts 16] [--n 4] [--max-new-tokens 64]

Both sample 4 completions for each of 16 built-in helpfulness prompts with SmolLM2-135M-Instruct
(fp32, CPU), temperature 0.8, top-p 0.95, in the same left-padded batches; tokens counted up to EOS.
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import machine

from rlhf.data import read_prompts, resolve_prompts
from rlhf.generation import SamplingConfig, encode_prompts, eos_ids, sample
from rlhf.models.registry import load_causal_lm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_causal_lm("smollm2-135m-instruct")
    prompts = [p.prompt for p in read_prompts(resolve_prompts("helpful"), split="train")[: args.prompts]]
    texts = [p for p in prompts for _ in range(args.n)]
    batches = [encode_prompts(tok, texts[i : i + args.batch_size], 512) for i in range(0, len(texts), args.batch_size)]
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95)
    eos = eos_ids(tok, model)

    texts: dict[str, dict[int, list[str]]] = {"rlhf sample": {}, "transformers generate": {}}

    def ours(ids, mask, seed):
        out = sample(model, ids, mask, cfg, eos, tok.pad_token_id, torch.Generator().manual_seed(seed))
        texts["rlhf sample"][seed] = [tok.decode(r[: int(n)]) for r, n in zip(out.responses, out.response_lengths)]
        return int(out.response_mask.sum())

    @torch.inference_mode()
    def hf(ids, mask, seed):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.95, top_k=0,
            max_new_tokens=args.max_new_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id,
        )
        resp = out[:, ids.shape[1] :]
        is_eos = torch.isin(resp, torch.tensor(eos))
        # tokens up to and including the first EOS (pad == EOS, so count by position, not by id)
        first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, torch.full_like(is_eos[:, 0], resp.shape[1], dtype=torch.long))
        texts["transformers generate"][seed] = [tok.decode(r[: int(n)]) for r, n in zip(resp, first)]
        return int(first.sum())

    ours(*batches[0], 0)  # warm-up both paths
    hf(*batches[0], 0)
    results = {"rlhf sample": [0, 0.0], "transformers generate": [0, 0.0]}
    for r in range(args.repeats):
        for name, fn in (("rlhf sample", ours), ("transformers generate", hf)) if r % 2 == 0 else (("transformers generate", hf), ("rlhf sample", ours)):
            for i, (ids, mask) in enumerate(batches):
                t0 = time.perf_counter()
                results[name][0] += fn(ids, mask, 1000 * r + i)
                results[name][1] += time.perf_counter() - t0
    print(f"machine: {machine(f'{torch.get_num_threads()} threads', f'torch {torch.__version__}')}")
    print(f"SmolLM2-135M-Instruct fp32, {args.prompts} prompts x {args.n} completions, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, T=0.8 top-p=0.95, {args.repeats} repeats")
    print(f"{'sampler':<24}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    for name, (n, s) in results.items():
        print(f"{name:<24}{n:>8}{s:>10.1f}{n / s:>10.1f}")
    a, b = (results[k][0] / results[k][1] for k in results)
    print(f"speed-up: {a / b:.2f}x")
    # Same seeds and the same sampling maths draw the same tokens: a check that the fast path is exact.
    same = sum(x == y for k in texts["rlhf sample"] for x, y in zip(texts["rlhf sample"][k], texts["transformers generate"][k]))
    total = sum(len(v) for v in texts["rlhf sample"].values())
    print(f"identical completions (same seed): {same}/{total}")


if __name__ == "__main__":
    main()
