"""Generation behind one small interface: a `Generator` samples continuations of left-padded prompts.

Every sampler call in the toolkit (online-optimiser rollouts, `rlhf generate`, `rlhf evaluate`,
constitutional AI) goes through `generate(model, ...)`, which takes `sample`'s arguments and picks the
backend from `SamplingConfig.backend`:

- `hf` (the default wherever vLLM or a GPU is missing): `rlhf.generation.sample`, the KV-cache sampler,
  run on the model object itself: the same completions at the same seed as before this interface existed.
- `vllm`: a vLLM engine (paged attention, continuous batching) built from the model's folder, then given
  the in-memory model's weights; `sync_weights(model)` reloads them after every policy update (LoRA
  merged into the base weights, as OpenRLHF and TRL do), so rollouts always come from the current policy.
- `auto`: vllm when `vllm` imports and a CUDA GPU is present, else hf.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch

from rlhf.generation import SampleOutput, SamplingConfig, sample

Tensor = torch.Tensor


class Generator(Protocol):
    name: str
    live: bool
    """Samples from the training model object itself (nothing to sync after an update)."""

    def generate(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, cfg: SamplingConfig,
                 eos_token_ids: Sequence[int], pad_token_id: int,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 with_logprobs: bool = False) -> SampleOutput:
        """Continuations of a left-padded (B, P) batch; responses right-padded, masks up to and including EOS.

        `with_logprobs`: a backend that can return the drawn tokens' log-probs and entropies (`sample`'s);
        one that cannot leaves them None, and callers recompute them."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next `generate` use `model`'s current weights."""


class HFGenerator:
    """The KV-cache sampler on the model object (CPU or GPU)."""

    name, live = "hf", True

    def generate(self, model, input_ids, attention_mask, cfg, eos_token_ids, pad_token_id, generator=None,
                 with_logprobs=False) -> SampleOutput:
        return sample(model, input_ids, attention_mask, cfg, eos_token_ids, pad_token_id, generator, with_logprobs)

    def sync_weights(self, model) -> None:
        pass


@functools.cache
def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_backend(backend: str) -> str:
    """auto -> vllm or hf; vllm without vllm or a GPU is refused rather than silently replaced."""
    if backend == "auto":
        return "vllm" if vllm_available() else "hf"
    if backend == "vllm" and not vllm_available():
        raise RuntimeError(
            "sampling.backend=vllm needs the `vllm` package and a CUDA GPU (this machine has "
            f"{'no GPU' if not torch.cuda.is_available() else 'no vllm'}); use sampling.backend=hf or auto")
    if backend not in ("hf", "vllm"):
        raise ValueError(f"sampling.backend must be auto, hf or vllm, not {backend!r}")
    return backend


def merged_weights(lm: torch.nn.Module) -> list[tuple[str, Tensor]]:
    """(name, tensor) of a causal LM as its base checkpoint names them, with active LoRA adapters folded in.

    peft injects `x.base_layer.weight` and `x.lora_A/B.*`; vLLM's `load_weights` wants `x.weight` = W + B A s.
    """
    from peft.tuners.lora import Linear as LoraLinear

    lora = {n: m for n, m in lm.named_modules() if isinstance(m, LoraLinear)}
    out = []
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if ".lora_" in name:
                continue
            if ".base_layer." in name:
                owner, leaf = name.split(".base_layer.", 1)
                m = lora[owner]
                if leaf == "weight":
                    p = p + sum(m.get_delta_weight(a) for a in m.active_adapters if a in m.lora_A)
                name = f"{owner}.{leaf}"
            out.append((name.removeprefix("base_model.model."), p.detach()))
    return out


def _vllm_model(llm: Any) -> Any:
    """The torch model inside an in-process vLLM engine (the path TRL uses for the same weight sync)."""
    return llm.llm_engine.model_executor.driver_worker.model_runner.model


class VLLMGenerator:
    """A vLLM engine holding a copy of the policy's weights. `engine` is a `vllm.LLM` (or a stand-in in tests)."""

    name, live = "vllm", False

    def __init__(self, engine: Any, params: Callable[..., Any] | None = None):
        self.engine = engine
        self.params = params
        self.syncs = 0

    @classmethod
    def from_model(cls, model: torch.nn.Module, **engine_kw: Any) -> "VLLMGenerator":
        """An engine for `model`'s architecture (from its folder), loaded with the in-memory weights."""
        import os

        import vllm

        path = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not path:
            raise ValueError("vllm backend: the model has no config._name_or_path to build the engine from")
        # In-process engine in this (launched) process, as TRL's colocate mode builds it: the worker's model is
        # then reachable for load_weights. A plain one-process call gets the rendezvous variables it expects.
        for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}.items():
            os.environ.setdefault(k, v)
        kw = {"gpu_memory_utilization": 0.3, "enable_prefix_caching": True, "distributed_executor_backend": "external_launcher",
              "max_num_batched_tokens": 4096, "seed": int(os.environ["RANK"])} | engine_kw
        gen = cls(vllm.LLM(model=path, **kw), vllm.SamplingParams)
        gen.sync_weights(model)
        return gen

    def sync_weights(self, model: torch.nn.Module) -> None:
        target = _vllm_model(self.engine)
        target.load_weights(merged_weights(model))
        if hasattr(self.engine, "reset_prefix_cache"):
            self.engine.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self.syncs += 1

    def generate(self, model, input_ids, attention_mask, cfg, eos_token_ids, pad_token_id, generator=None,
                 with_logprobs=False) -> SampleOutput:
        # vLLM's log-probs come from its own kernels (and precision): the caller recomputes them (None here)
        B = input_ids.size(0)
        seeds = _row_seeds(B, generator)
        prompts = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(input_ids, attention_mask)]
        params = [self.params(n=1, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or -1,
                              max_tokens=cfg.max_new_tokens, seed=s, stop_token_ids=list(eos_token_ids)) for s in seeds]
        outs = [o.outputs[0] for o in self.engine.generate(prompts, params, use_tqdm=False)]
        # A row that stopped on a stop token ends with EOS in our layout, whether or not vLLM returned the token.
        rows = [list(o.token_ids) + ([eos_token_ids[0]] if getattr(o, "finish_reason", None) == "stop"
                                     and not set(o.token_ids[-1:]) & set(eos_token_ids) else []) for o in outs]
        return pack_responses(input_ids, attention_mask, rows, eos_token_ids, pad_token_id)


def _row_seeds(n: int, generator) -> list[int | None]:
    if generator is None:
        return [None] * n
    if isinstance(generator, torch.Generator):
        return torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist()
    return [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in generator]


def pack_responses(input_ids: Tensor, attention_mask: Tensor, responses: Iterable[Sequence[int]],
                   eos_token_ids: Sequence[int], pad_token_id: int) -> SampleOutput:
    """Token lists -> SampleOutput as `sample` builds it: right-padded, mask up to and including the first EOS."""
    eos = set(eos_token_ids)
    rows = []
    for ids in responses:
        ids = list(ids)
        cut = next((i for i, t in enumerate(ids) if t in eos), None)
        rows.append((ids[: cut + 1] if cut is not None else ids, cut is not None))
    T = max(1, max(len(r) for r, _ in rows))
    resp = torch.full((len(rows), T), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T)
    for i, (r, _) in enumerate(rows):
        resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1.0
    resp, mask = resp.to(input_ids.device), mask.to(input_ids.device)
    return SampleOutput(
        sequences=torch.cat([input_ids, resp], 1), attention_mask=torch.cat([attention_mask.long(), mask.long()], 1),
        response_mask=mask, finished=torch.tensor([f for _, f in rows], device=input_ids.device), prompt_len=input_ids.size(1),
    )


_HF = HFGenerator()
_ENGINES: "weakref.WeakKeyDictionary[torch.nn.Module, VLLMGenerator]" = weakref.WeakKeyDictionary()


def generator_for(model: torch.nn.Module, backend: str = "auto") -> Generator:
    """The generator serving `model` under `backend` (one vLLM engine per model object, built on first use)."""
    if resolve_backend(backend) == "hf":
        return _HF
    if model not in _ENGINES:
        _ENGINES[model] = VLLMGenerator.from_model(model)
    return _ENGINES[model]


def generate(model, input_ids: Tensor, attention_mask: Tensor, cfg: SamplingConfig, eos_token_ids: Sequence[int],
             pad_token_id: int, generator=None, with_logprobs: bool = False) -> SampleOutput:
    """`sample`'s signature, served by the backend `cfg.backend` selects."""
    return generator_for(model, cfg.backend).generate(
        model, input_ids, attention_mask, cfg, eos_token_ids, pad_token_id, generator, with_logprobs)


def sync_weights(model: torch.nn.Module, backend: str = "auto") -> None:
    """After a policy update: push the weights into `model`'s engine (nothing to do for the hf backend)."""
    g = generator_for(model, backend)
    if not g.live:
        g.sync_weights(model)


def sampling_context(policy: torch.nn.Module, backend: str):
    """How the hf backend samples a LoRA policy fast (adapters folded in for the duration); none for vLLM."""
    from rlhf.models.lora import merged_for_sampling

    return merged_for_sampling(policy) if resolve_backend(backend) == "hf" else contextlib.nullcontext()
