"""Simulated labelers: rank (or thumb) completions by a gold scorer or a taste, plus noise, through the real HTTP API.

A taste is `(prompt, completions) -> scores`, e.g. the judges' combination in `rlhf.judges.Taste`
(harmless first, then helpful). A bad labeler ranks in reverse: the design notes' labeler "who may have
misunderstood the instructions". Labelers work concurrently; with a pre-assigned design
(`store.preassign_balanced`) and noise seeded per (labeler, item), what they submit does not depend on timing.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import httpx

from rlhf.feedback.config import SimulationConfig
from rlhf.feedback.rankings import tiers_from_scores
from rlhf.scorers import Scorer, get_scorer

GoldScorer = Union[str, Scorer, Callable[[Sequence[str]], Sequence[float]]]
Taste = Callable[[str, Sequence[str]], Sequence[float]]  # (prompt, completions) -> scores, higher is better


@dataclass(frozen=True)
class SimulatedLabeler:
    name: str
    token: str
    noise: float | None = None
    """Overrides SimulationConfig.noise for this labeler."""
    bad: bool = False
    """Rank in reverse order of the gold score."""


@dataclass
class SimulationSummary:
    judgements: dict[str, int] = field(default_factory=dict)
    """Submitted judgements per labeler."""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.judgements.values())


def _scoring_fn(scorer: GoldScorer) -> Callable[[Sequence[str]], list[float]]:
    """Texts -> scores where higher is better, whatever the scorer's orientation."""
    if isinstance(scorer, str):
        scorer = get_scorer(scorer)
    if isinstance(scorer, Scorer):
        sign = 1.0 if scorer.higher_is_better else -1.0
        return lambda texts: [sign * x for x in scorer.score(list(texts))]
    return lambda texts: [float(x) for x in scorer(list(texts))]


def noisy_scores(
    scores: Sequence[float], noise: float, rng: random.Random, reverse: bool = False, scale: str = "item"
) -> list[float]:
    """z-score within the item (scale="item") or keep raw scores ("absolute"), add N(0, noise^2); reversed for a bad labeler."""
    n = len(scores)
    mean = sum(scores) / n
    sd = (sum((s - mean) ** 2 for s in scores) / n) ** 0.5
    if scale == "absolute":
        z = [s - mean for s in scores]  # ranking is shift-invariant; centring makes thumbs mean "better than the rest"
    else:
        z = [(s - mean) / sd if sd > 0 else 0.0 for s in scores] if n > 1 else [scores[0]]
    z = [-x for x in z] if reverse else z
    return [x + rng.gauss(0.0, noise) for x in z]


def simulated_judgement(
    mode: str, completion_ids: Sequence[int], scores: Sequence[float], noise: float, rng: random.Random,
    bad: bool = False, tie_margin: float = 0.0, scale: str = "item",
) -> dict:
    """The request body a simulated labeler submits for one item."""
    noisy = noisy_scores(scores, noise, rng, bad, scale)
    if mode == "thumbs":
        return {"thumbs": {str(cid): "up" if s > 0 else "down" for cid, s in zip(completion_ids, noisy)}}
    tiers = tiers_from_scores(noisy, tol=tie_margin)
    return {"ranking": [[completion_ids[i] for i in t] if len(t) > 1 else completion_ids[t[0]] for t in tiers]}


def _label_loop(
    base_url: str, project_id: int, lab: SimulatedLabeler, score: Callable, lock: threading.Lock,
    cfg: SimulationConfig, summary: SimulationSummary,
) -> None:
    noise = cfg.noise if lab.noise is None else lab.noise
    bad = lab.bad or lab.name in cfg.bad
    done = 0
    headers = {"Authorization": f"Bearer {lab.token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as client:
        while cfg.max_items is None or done < cfg.max_items:
            r = client.get(f"/api/projects/{project_id}/next")
            r.raise_for_status()
            task = r.json()["assignment"]
            if task is None:
                break
            comps = sorted(task["item"]["completions"], key=lambda c: c["id"])  # noise must not follow the display order
            # Noise seeded per (labeler, item): a judgement does not depend on the order items were served in.
            rng = random.Random(int(hashlib.sha1(f"{cfg.seed}:{lab.name}:{task['item']['id']}".encode()).hexdigest()[:8], 16))
            with lock:  # scorers are not guaranteed thread-safe
                scores = score(task["item"]["prompt"], [c["text"] for c in comps])
            body = simulated_judgement(
                task["project"]["mode"], [c["id"] for c in comps], scores, noise, rng, bad, cfg.tie_margin, cfg.scale
            )
            r = client.post(f"/api/assignments/{task['assignment_id']}/judgement", json=body)
            if r.status_code >= 400:
                summary.errors.append(f"{lab.name}: {r.status_code} {r.text}")
                break
            done += 1
    summary.judgements[lab.name] = done


def run_simulated_labelers(
    base_url: str, project_id: int, labelers: Sequence[SimulatedLabeler],
    scorer: GoldScorer | None = None, cfg: SimulationConfig = SimulationConfig(), taste: Taste | None = None,
) -> SimulationSummary:
    """Run every labeler concurrently (one HTTP client each) until no work is left for them.

    `taste`: (prompt, completions) -> scores (higher is better), used when given; else `scorer`: a scorer
    name, a `rlhf.scorers.Scorer`, or texts -> scores; default `cfg.scorer`.
    """
    if taste is not None:
        score = lambda prompt, texts: [float(x) for x in taste(prompt, texts)]  # noqa: E731
    else:
        by_text = _scoring_fn(scorer if scorer is not None else cfg.scorer)
        score = lambda prompt, texts: by_text(texts)  # noqa: E731
    summary = SimulationSummary()
    lock = threading.Lock()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, len(labelers))) as pool:
        futures = [pool.submit(_label_loop, base_url, project_id, lab, score, lock, cfg, summary) for lab in labelers]
        for f in futures:
            f.result()
    summary.seconds = time.perf_counter() - t0
    return summary
