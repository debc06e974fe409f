"""One reward interface for PPO and evaluation: `RewardFunction(prompts, completions) -> (B,) tensor`.

Implementations: a trained reward model, a sequence classifier's positive-class logit, a gold
scorer, or a plain Python function. `load_reward_function(spec)` builds one from a short string.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from rlhf.scorers import get_scorer


@runtime_checkable
class RewardFunction(Protocol):
    name: str
    normalization: tuple[float, float] | None
    """(mean, std) of this reward over a reference set, for PPO's optional normalisation."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:  # (B,) float32
        ...


class FunctionReward:
    """Wrap `fn(prompts, completions) -> list[float]`."""

    normalization = None

    def __init__(self, fn: Callable[[Sequence[str], Sequence[str]], Sequence[float]], name: str | None = None):
        self.fn, self.name = fn, name or getattr(fn, "__name__", "function")

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(list(self.fn(prompts, completions)), dtype=torch.float32)


class ScorerReward:
    """A gold scorer as a reward; for lower-is-better probabilities (toxicity) the reward is 1 - p."""

    normalization = None

    def __init__(self, scorer_name: str):
        self.scorer = get_scorer(scorer_name)
        self.name = self.scorer.name if self.scorer.higher_is_better else f"1-{self.scorer.name}"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        s = torch.tensor(self.scorer.score(list(completions)), dtype=torch.float32)
        return s if self.scorer.higher_is_better else 1.0 - s


class RewardModelReward:
    """A trained reward-model folder (`rlhf train-reward` output, or any HF num_labels=1 model)."""

    def __init__(self, path: str | Path, batch_size: int = 32):
        from rlhf.reward.model import SPEC_FILE, STATS_FILE, RewardModel

        folder = Path(path)
        # A folder we did not train keeps the pooling its own head was trained with.
        pooling = None if (folder / SPEC_FILE).exists() else "native"
        self.model = RewardModel.from_pretrained(path, pooling=pooling).eval()
        self.batch_size = batch_size
        self.name = f"rm:{folder.name or path}"
        stats = folder / STATS_FILE
        self.normalization: tuple[float, float] | None = None
        if stats.exists():
            s = json.loads(stats.read_text(encoding="utf-8"))
            self.normalization = (float(s["mean"]), float(s["std"]))

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return self.model.score(prompts, completions, self.batch_size)


def _label_index(config, label: str | None, model: str) -> int:
    names = {int(i): str(n) for i, n in (config.id2label or {}).items()}
    if label is None:
        if config.num_labels == 1:
            return 0
        raise ValueError(f"classifier {model} has {config.num_labels} labels {sorted(names.values())}; name one: "
                         f"classifier:{model}:LABEL")
    for i, n in names.items():
        if n.lower() == label.lower():
            return i
    if label.isdigit() and int(label) < config.num_labels:
        return int(label)
    raise ValueError(f"classifier {model}: no label {label!r}; labels are {[names[i] for i in sorted(names)]}")


class ClassifierReward:
    """An existing sequence classifier; the reward is the logit of one named class of the completion text."""

    normalization = None

    def __init__(self, model: str, label: str | None = None, batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification

        from rlhf.models.registry import load_tokenizer, resolve

        path = resolve(model)
        self.tokenizer = load_tokenizer(path, padding_side="right")
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.index = _label_index(self.model.config, label, model)
        self.batch_size, self.max_length = batch_size, min(max_length, self.tokenizer.model_max_length)
        label_name = (self.model.config.id2label or {}).get(self.index, str(self.index))
        self.name = f"classifier:{Path(str(model)).name}:{label_name}"

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        texts = list(completions)
        out = torch.empty(len(texts), dtype=torch.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            out[idx] = self.model(**enc).logits[:, self.index].float()
        return out


def is_reward_model_dir(path: str | Path) -> bool:
    from rlhf.reward.model import SPEC_FILE

    return (Path(path) / SPEC_FILE).is_file()


def load_reward_function(spec: str) -> RewardFunction:
    """Build a reward from a spec string.

    - `rm:PATH`, or a bare PATH of a folder written by `rlhf train-reward`: a trained reward model
      (its `normalization` comes from the saved reward_stats.json);
    - `classifier:MODEL[:LABEL]`: the logit of class LABEL (a name from the model's id2label, or an
      index) of an existing sequence classifier, applied to the completion;
    - `scorer:toxicity` / `scorer:sentiment`: a gold scorer (toxicity becomes 1 - p(toxic));
    - `python:package.module:function`: a plain function `(prompts, completions) -> floats`;
    - `rm-user:PATH:USER`: user USER's reward (a name or `u<ID>`) from the personal reward folder PATH written by
      `rlhf personalize` (`runs/personal` or its `reward/`); the shared reward when USER has no part yet.
    """
    if (Path(spec) / "personal_reward.json").is_file():
        raise ValueError(f"reward {spec!r} is a personal reward; name the user: rm-user:{spec}:USER")
    if is_reward_model_dir(spec):
        return RewardModelReward(spec)
    kind, _, rest = spec.partition(":")
    if kind == "rm":
        if not Path(rest).is_dir():
            raise FileNotFoundError(f"reward spec {spec!r}: {rest} is not a folder")
        return RewardModelReward(rest)
    if kind == "rm-user":
        path, _, user = rest.rpartition(":")
        if not path or not user:
            raise ValueError(f"reward spec {spec!r}: expected rm-user:PATH:USER")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"reward spec {spec!r}: {path} is not a folder")
        from rlhf.personalize.reward import PersonalReward

        return PersonalReward(path, user)
    if kind == "classifier":
        model, label = (rest.rsplit(":", 1) if ":" in rest else (rest, None))
        if not model:
            raise ValueError(f"reward spec {spec!r}: expected classifier:MODEL[:LABEL]")
        return ClassifierReward(model, label)
    if kind == "scorer":
        return ScorerReward(rest)
    if kind == "python":
        module, _, fn = rest.rpartition(":")
        if not module or not fn:
            raise ValueError(f"reward spec {spec!r}: expected python:package.module:function")
        return FunctionReward(getattr(importlib.import_module(module), fn), name=fn)
    raise ValueError(
        f"unknown reward spec {spec!r}; expected rm:PATH, a reward-model folder, rm-user:PATH:USER, "
        "classifier:MODEL[:LABEL], scorer:NAME or python:module:fn"
    )
