"""A tiny SFT run (LoRA); under `accelerate launch` every process saves the weights it ends with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tiny import tiny_llama, tiny_tokenizer

from rlhf.config import load_config
from rlhf.distributed import make_runtime
from rlhf.sft import SFTConfig, train_sft

# Responses of different lengths, so the processes' shares hold different token counts; 7 records in batches
# of 3: the processes get 2 and 1 examples.
RECORDS = [(f"say something {i}", " ".join(["thank you, that is kind"] * (1 + i % 3))) for i in range(7)]


def run(out: Path):
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    rt = make_runtime()
    cfg = load_config(SFTConfig, None, ["lora.r=4"], out_dir=str(out), epochs=2, lr=1e-2, batch_size=3, max_length=64)
    res = train_sft(cfg, RECORDS, model_and_tokenizer=(tiny_llama(len(tok)), tok), runtime=rt)
    (out / f"losses_rank{rt.rank}.json").write_text(json.dumps(res.losses))
    return res


if __name__ == "__main__":
    run(Path(sys.argv[1]))
