"""Per-user reward with shared parameters (LoRe, Bose et al. 2025, arXiv 2504.14439): r_u(x, y) = w_u . B phi(x, y).

phi: pooled features of a shared trunk (H); B: K basis rewards (a Linear H -> K) shared by everyone; w_u in R^K:
the user's part. The shared reward uses w_0, trained on everyone's pairs pooled: the fallback for users without
pairs. Each user's part is a MAP fit with a Gaussian prior centred at w_0 on the frozen shared part (convex in
w_u), so a handful of pairs moves it only as far as they justify, and no pairs leaves it at w_0.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rlhf.data import write_json
from rlhf.personalize.config import PersonalRewardConfig
from rlhf.personalize.data import Thumb, UserFeedback, user_key
from rlhf.reward.data import TokenBatch, collate_pairs, length_grouped_batches
from rlhf.reward.model import RewardModel, last_token_pool, mean_pool
from rlhf.types import PreferencePair

log = logging.getLogger(__name__)

SPEC = "personal_reward.json"
WEIGHTS = "personal_reward.safetensors"


@dataclass
class UserPart:
    """A user's part of the reward: weights over the basis, plus an offset for thumbs (pointwise labels)."""

    labeler_id: int
    name: str
    w: torch.Tensor  # (K,)
    b: float = 0.0
    pairs: int = 0
    thumbs: int = 0
    normalization: tuple[float, float] = (0.0, 1.0)
    """(mean, std) of this user's reward over their own replies, for PPO's normalisation."""
    shared_version: int = 0
    """Version of the shared part it was fitted on; a part of another version is stale."""
    last_judgement_id: int = 0
    heldout: dict = field(default_factory=dict)
    """Accuracy on the user's held-out choices: this reward's and the shared reward's."""


# ------------------------------------------------------------------------------------ the model


class PersonalRewardModel(nn.Module):
    """Shared trunk + basis + shared weights; users' parts are kept apart (see `UserPart`).

    `pooling`: 'reply' = mean of the reply's own token states (the trunk still reads the conversation before it),
    'mean' = mean over all tokens, 'last' = the last token; `depth`: the hidden layer pooled, as a fraction of the
    trunk's depth (1 = the last layer).
    """

    def __init__(self, rm: RewardModel, rank: int, version: int = 0, meta: dict | None = None,
                 pooling: str = "reply", depth: float = 1.0):
        super().__init__()
        if pooling not in ("reply", "mean", "last"):
            raise ValueError(f"pooling must be reply, mean or last, not {pooling!r}")
        self.rm, self.pooling, self.depth = rm, pooling, depth
        hidden = rm.model.config.get_text_config().hidden_size
        self.basis = nn.Linear(hidden, rank)
        self.shared = nn.Parameter(torch.zeros(rank))  # w_0
        # Trunk features are standardised first: decoder hidden states have a few huge dimensions.
        self.register_buffer("feat_mean", torch.zeros(hidden))
        self.register_buffer("feat_std", torch.ones(hidden))
        self.version = version
        self.meta = dict(meta or {}) | {"pooling": pooling, "depth": depth}
        self.normalization: tuple[float, float] = (0.0, 1.0)

    @property
    def rank(self) -> int:
        return self.basis.out_features

    def features(self, batch: TokenBatch, tails: torch.Tensor) -> torch.Tensor:
        """(N, T) tokens -> (N, K) basis rewards."""
        return self.basis((self.pooled(batch, tails) - self.feat_mean) / self.feat_std)

    def pooled(self, batch: TokenBatch, tails: torch.Tensor) -> torch.Tensor:
        """(N, T) right-padded tokens, (N,) reply tokens at the end of each row -> (N, H) pooled trunk states."""
        states = self.hidden_states(batch)
        return pool(states[round(self.depth * (len(states) - 1))], batch.attention_mask, tails, self.pooling)

    def hidden_states(self, batch: TokenBatch) -> tuple[torch.Tensor, ...]:
        """The trunk's (N, T, H) states of every layer (embeddings first)."""
        mask = batch.attention_mask
        kw = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "use_cache": False} if self.rm.spec.decoder else {}
        if batch.token_type_ids is not None:
            kw["token_type_ids"] = batch.token_type_ids
        trunk = getattr(self.rm.model, self.rm.model.base_model_prefix)
        return trunk(input_ids=batch.input_ids, attention_mask=mask, output_hidden_states=True, **kw).hidden_states

    def reply_tails(self, texts: Sequence[str]) -> list[int]:
        """Tokens each reply occupies at the end of its row (cut as the encoder cuts it, plus a closing EOS/SEP)."""
        enc = self.rm.encoder
        closing = int(enc.eos_id is not None or enc.backend.num_special_tokens_to_add(True) > 0)
        return [min(len(e.ids), enc.budget) + closing for e in enc.backend.encode_batch(list(texts), add_special_tokens=False)]

    @torch.inference_mode()
    def feature_table(self, prompts: Sequence[str], texts: Sequence[str], batch_size: int = 16,
                      pooled: bool = False) -> torch.Tensor:
        """(N, K) basis rewards (or (N, H) pooled trunk states) of (prompt, text) rows, batched by length."""
        was = self.training
        self.eval()
        enc = self.rm.encoder.encode(prompts, texts)
        tails = torch.tensor(self.reply_tails(texts))
        out = torch.empty(len(enc), self.basis.in_features if pooled else self.rank)
        for idx in length_grouped_batches([len(e.ids) for e in enc], batch_size, seed=None):
            batch = self.rm.batch([enc[i] for i in idx])
            out[idx] = (self.pooled(batch, tails[idx]) if pooled else self.features(batch, tails[idx])).float()
        self.train(was)
        return out

    def score(self, prompts: Sequence[str], texts: Sequence[str], w: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) rewards with weights `w` (default: the shared weights)."""
        if not len(texts):
            return torch.empty(0)
        return self.feature_table(prompts, texts) @ (self.shared.detach() if w is None else w)

    # ------------------------------------------------------------------ saving / loading

    def save(self, folder: Path) -> Path:
        self.rm.save_pretrained(folder)
        save_file({"basis.weight": self.basis.weight.detach().contiguous(), "basis.bias": self.basis.bias.detach(),
                   "shared": self.shared.detach(), "feat_mean": self.feat_mean, "feat_std": self.feat_std},
                  str(folder / WEIGHTS))
        write_json(folder / SPEC, self.meta | {"rank": self.rank, "version": self.version,
                                               "normalization": list(self.normalization)})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "PersonalRewardModel":
        folder = Path(folder)
        if not (folder / SPEC).is_file():
            raise FileNotFoundError(f"{folder}: not a personal reward folder (no {SPEC}; run `rlhf personalize`)")
        meta = json.loads((folder / SPEC).read_text(encoding="utf-8"))
        model = cls(RewardModel.from_pretrained(folder), int(meta["rank"]), int(meta["version"]), meta,
                    meta.get("pooling", "reply"), float(meta.get("depth", 1.0)))
        model.rm.model.requires_grad_(False)
        state = load_file(str(folder / WEIGHTS))
        with torch.no_grad():
            model.basis.weight.copy_(state["basis.weight"])
            model.basis.bias.copy_(state["basis.bias"])
            model.shared.copy_(state["shared"])
            model.feat_mean.copy_(state["feat_mean"])
            model.feat_std.copy_(state["feat_std"])
        model.normalization = tuple(meta.get("normalization", (0.0, 1.0)))  # type: ignore[assignment]
        return model.eval()


def pool(hidden: torch.Tensor, mask: torch.Tensor, tails: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, T, H) states of right-padded rows, (N, T) mask, (N,) reply tokens at the end of each row -> (N, H):
    the mean over the reply's tokens ('reply'), over all tokens ('mean'), or the last token ('last')."""
    if pooling == "last":
        return last_token_pool(hidden, mask)
    if pooling == "reply":
        pos = torch.arange(mask.shape[1], device=mask.device)  # (T,)
        end = mask.sum(-1, keepdim=True)  # (N, 1)
        mask = ((pos >= end - tails.unsqueeze(-1)) & (pos < end)).long()  # (N, T): the reply's tokens
    return mean_pool(hidden, mask)


def save_user_part(folder: Path, part: UserPart) -> None:
    """Write a user's part atomically (weights, then metadata)."""
    users = folder / "users"
    users.mkdir(parents=True, exist_ok=True)
    key = user_key(part.labeler_id)
    tmp = users / f".{key}.safetensors.tmp"
    save_file({"w": part.w.detach().float().contiguous(), "b": torch.tensor([part.b])}, str(tmp))
    tmp.replace(users / f"{key}.safetensors")
    write_json(users / f"{key}.json", {
        "labeler_id": part.labeler_id, "name": part.name, "pairs": part.pairs, "thumbs": part.thumbs,
        "normalization": list(part.normalization), "shared_version": part.shared_version,
        "last_judgement_id": part.last_judgement_id, "heldout": part.heldout,
    })


def load_user_part(folder: str | Path, user: str | int) -> UserPart | None:
    """A user's part by name, `u<ID>` or id; None when the user has none."""
    users = Path(folder) / "users"
    if isinstance(user, int) or (isinstance(user, str) and user[1:].isdigit() and user.startswith("u")):
        keys = [user_key(user if isinstance(user, int) else int(user[1:]))]
    else:
        keys = [p.stem for p in users.glob("u*.json") if json.loads(p.read_text(encoding="utf-8")).get("name") == user]
    for key in keys:
        meta_path, weights = users / f"{key}.json", users / f"{key}.safetensors"
        if meta_path.is_file() and weights.is_file():
            m = json.loads(meta_path.read_text(encoding="utf-8"))
            t = load_file(str(weights))
            return UserPart(m["labeler_id"], m["name"], t["w"], float(t["b"][0]), m["pairs"], m["thumbs"],
                            tuple(m["normalization"]), m["shared_version"], m["last_judgement_id"], m.get("heldout", {}))
    return None


# ------------------------------------------------------------------------------------ fitting


def fit_user_weights(
    diffs: torch.Tensor,  # (P, K) f(chosen) - f(rejected)
    thumb_feats: torch.Tensor,  # (M, K)
    thumb_labels: torch.Tensor,  # (M,) +1 / -1
    prior_mean: torch.Tensor,  # (K,) w_0
    prior: float,
) -> tuple[torch.Tensor, float]:
    """MAP weights: sum softplus(-D w) + sum softplus(-y (T w + b)) + prior (|w - w_0|^2 + b^2). Convex; L-BFGS."""
    w = prior_mean.detach().clone().requires_grad_(True)
    b = torch.zeros(1, requires_grad=True)
    if not len(diffs) and not len(thumb_feats):
        return w.detach(), 0.0
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.softplus(-(diffs @ w)).sum() + F.softplus(-thumb_labels * (thumb_feats @ w + b)).sum()
        loss = loss + prior * (((w - prior_mean) ** 2).sum() + (b**2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), float(b.detach()[0])


def pair_accuracy(diffs: torch.Tensor, w: torch.Tensor) -> float:
    """Share of pairs whose chosen reply scores higher (exact ties count half)."""
    d = diffs @ w
    return float(((d > 0).float() + 0.5 * (d == 0).float()).mean()) if len(d) else float("nan")


def _pair_diffs(model: PersonalRewardModel, pairs: Sequence[PreferencePair]) -> torch.Tensor:
    if not pairs:
        return torch.empty(0, model.rank)
    prompts = [p.prompt for p in pairs]
    f = model.feature_table(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return f[: len(pairs)] - f[len(pairs) :]  # (P, K)


def _thumb_feats(model: PersonalRewardModel, thumbs: Sequence[Thumb]) -> tuple[torch.Tensor, torch.Tensor]:
    if not thumbs:
        return torch.empty(0, model.rank), torch.empty(0)
    return model.feature_table([t.prompt for t in thumbs], [t.text for t in thumbs]), torch.tensor(
        [float(t.label) for t in thumbs])


def fit_user_part(model: PersonalRewardModel, user: UserFeedback, prior: float) -> UserPart:
    """The user's part on the frozen shared part, its normalisation, and its held-out accuracy vs the shared reward."""
    diffs = _pair_diffs(model, user.pairs)
    tf, ty = _thumb_feats(model, user.thumbs)
    w0 = model.shared.detach()
    w, b = fit_user_weights(diffs, tf, ty, w0, prior)
    texts = [(p.prompt, p.chosen) for p in user.pairs] + [(p.prompt, p.rejected) for p in user.pairs]
    texts += [(t.prompt, t.text) for t in user.thumbs]
    norm = model.normalization
    if len(texts) > 1:
        r = model.feature_table([x[0] for x in texts], [x[1] for x in texts]) @ w
        norm = (float(r.mean()), max(float(r.std()), 1e-6))
    heldout = {}
    if user.heldout_pairs:
        hd = _pair_diffs(model, user.heldout_pairs)
        heldout = {"pairs": len(hd), "accuracy": pair_accuracy(hd, w), "shared_accuracy": pair_accuracy(hd, w0),
                   "correct": int(((hd @ w) > 0).sum()), "shared_correct": int(((hd @ w0) > 0).sum())}
    return UserPart(user.labeler_id, user.name, w, b, len(user.pairs), len(user.thumbs), norm, model.version,
                    user.last_judgement_id, heldout)


def _schedule(total: int, warmup: int) -> Callable[[int], float]:
    return lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))


def train_shared(
    users: dict[int, UserFeedback], cfg: PersonalRewardConfig, version: int,
    on_step: Callable[[int, int, float], None] | None = None,
) -> PersonalRewardModel:
    """Train the basis and every user's weights jointly on everyone's pairs (the trunk too with `train_trunk`),
    then the shared weights w_0: the best single reward for everyone in that basis.

    The basis and the weights carry L2 penalties (per pair): with a few hundred pairs and hundreds of feature
    dimensions a free basis would memorise every pair, conflicting ones included, and learn no taste at all.
    On a frozen trunk the pooled states are computed once and the heads train full-batch.
    """
    torch.manual_seed(cfg.seed)
    rm = RewardModel.from_pretrained(cfg.trunk, pooling="mean", max_length=cfg.max_length)
    for m in rm.model.modules():  # dropout adds noise to the pairwise difference (as in rlhf train-reward)
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    rm.model.requires_grad_(cfg.train_trunk)
    model = PersonalRewardModel(rm, cfg.rank, version, {"trunk": cfg.trunk}, cfg.pooling, cfg.depth)
    ids = sorted(u for u in users if users[u].pairs)
    pairs = [(i, p) for i, uid in enumerate(ids) for p in users[uid].pairs]
    if not pairs:
        raise ValueError("no preference pairs to train the shared reward on")
    prompts = [p.prompt for _, p in pairs] * 2
    texts = [p.chosen for _, p in pairs] + [p.rejected for _, p in pairs]
    h = model.feature_table(prompts, texts, pooled=True)  # (2P, H)
    model.feat_mean.copy_(h.mean(0))
    model.feat_std.copy_(h.std(0).clamp(min=1e-4))
    user_idx = torch.tensor([i for i, _ in pairs])  # (P,)
    W = nn.Parameter(0.1 * torch.randn(len(ids), cfg.rank))  # (U, K) users' weights during joint training
    groups = [{"params": [model.basis.weight, W], "lr": cfg.head_lr}]
    if cfg.train_trunk:
        groups.append({"params": [p for p in rm.model.parameters() if p.requires_grad], "lr": cfg.lr,
                       "weight_decay": 0.01})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)

    def loss_fn(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # d: (B, K) f(chosen) - f(rejected)
        user_loss = -F.logsigmoid((d * W[user_idx[idx]]).sum(-1)).mean()
        penalty = (cfg.basis_l2 * (model.basis.weight**2).sum() + cfg.user_prior * (W**2).sum()) / len(pairs)
        return user_loss + penalty

    if cfg.train_trunk:
        _train_with_trunk(model, pairs, cfg, opt, loss_fn, on_step)
    else:
        x = (h - model.feat_mean) / model.feat_std  # (2P, H)
        diff = x[: len(pairs)] - x[len(pairs) :]  # (P, H): the basis bias cancels in a difference
        everything = torch.arange(len(pairs))
        for step in range(cfg.head_steps):
            loss = loss_fn(diff @ model.basis.weight.T, everything)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_step:
                on_step(step + 1, cfg.head_steps, float(loss.detach()))
    model.eval().requires_grad_(False)
    f = model.feature_table(prompts, texts)  # (2P, K)
    w0, _ = fit_user_weights(f[: len(pairs)] - f[len(pairs) :], torch.empty(0, cfg.rank), torch.empty(0),
                             torch.zeros(cfg.rank), cfg.user_prior)
    model.shared.copy_(w0)
    s = f @ w0
    model.normalization = (float(s.mean()), max(float(s.std()), 1e-6))
    model.meta |= {"pairs": len(pairs), "users": ids}
    return model


def _train_with_trunk(model, pairs, cfg, opt, loss_fn, on_step) -> None:  # noqa: ANN001
    """Mini-batches of pairs through the trunk, which learns too (at `cfg.lr`)."""
    rm = model.rm
    enc = rm.encoder.encode_pairs([p.prompt for _, p in pairs], [p.chosen for _, p in pairs],
                                  [p.rejected for _, p in pairs], [1.0] * len(pairs), [0.0] * len(pairs))
    tails_c = torch.tensor(model.reply_tails([p.chosen for _, p in pairs]))
    tails_r = torch.tensor(model.reply_tails([p.rejected for _, p in pairs]))
    per_epoch = math.ceil(len(enc) / cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, max(1, round(0.1 * total))))
    model.train()
    step = 0
    while step < total:
        for idx in length_grouped_batches([p.length for p in enc], cfg.batch_size, seed=cfg.seed * 100_003 + step):
            if step >= total:
                break
            batch = collate_pairs([enc[i] for i in idx], rm.pad_id, rm.padding_side)
            tails = torch.zeros(len(batch.tokens.input_ids), dtype=tails_c.dtype)  # (N,): each distinct row's reply tokens
            tails[batch.chosen], tails[batch.rejected] = tails_c[idx], tails_r[idx]
            fc, fr = batch.rewards(model.features(batch.tokens, tails))  # (B, K) each
            loss = loss_fn(fc - fr, torch.tensor(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            sched.step()
            step += 1
            if on_step:
                on_step(step, total, float(loss.detach()))


# ------------------------------------------------------------------------------------ as a RewardFunction


class PersonalReward:
    """`rm-user:PATH:USER`: one user's reward from a personal reward folder; the shared reward if they have no part."""

    def __init__(self, path: str | Path, user: str):
        folder = Path(path)
        if not (folder / SPEC).is_file() and (folder / "reward" / SPEC).is_file():
            folder = folder / "reward"  # the personal folder itself
        self.model = PersonalRewardModel.load(folder)
        part = load_user_part(folder, user)
        if part is not None and part.shared_version != self.model.version:
            log.warning("%s: %s's reward part is stale (shared part changed); using the shared reward", folder, user)
            part = None
        elif part is None:
            log.warning("%s: no reward part for user %r yet; using the shared reward", folder, user)
        self.user, self.part = user, part
        self.w = part.w if part is not None else self.model.shared.detach()
        self.normalization: tuple[float, float] | None = part.normalization if part else self.model.normalization
        self.name = f"rm-user:{folder.name}:{user}"

    @property
    def personal(self) -> bool:
        """False when this is the shared reward standing in for a user without a part."""
        return self.part is not None

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return self.model.score(prompts, completions, self.w)
