from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import save_tiny_lm, tiny_llama, tiny_tokenizer  # noqa: E402

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tok():
    return tiny_tokenizer()


@pytest.fixture()
def tiny_lm(tiny_tok):
    """(model, tokenizer): a 2-layer random Llama with a ChatML tokenizer whose pad == EOS."""
    return tiny_llama(len(tiny_tok)), tiny_tok


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """The tiny model saved as an HF folder, for code paths that load by name."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))
