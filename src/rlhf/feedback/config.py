"""Configs of the human-feedback stage: import, serve, agreement, export and simulated labelers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

DEFAULT_DB = "runs/feedback/feedback.db"


@dataclass(frozen=True)
class ImportConfig:
    generations: str = "runs/generate/completions.jsonl"
    """`rlhf generate` output to load (one prompt with its completions per line)."""
    db: str = DEFAULT_DB
    """Feedback store: a SQLite file path or a database URL (postgresql+psycopg://user@host/db)."""
    project: str = "default"
    """Labeling project to load into; created if it does not exist (re-importing skips known ids)."""
    criterion: str = "harmless and helpful"
    """What labelers judge by, shown above every item."""
    instructions: str = ""
    """Labeler instructions in Markdown: inline text, or the path of a .md file."""
    mode: Literal["rank", "thumbs"] = "rank"
    """rank: order the N completions (ties allowed); thumbs: thumbs up/down per completion."""
    labelers_per_item: int = 3
    """k: labelers each item is assigned to (never twice to the same labeler)."""

    def __post_init__(self) -> None:
        if self.labelers_per_item < 1:
            raise ValueError("labelers_per_item must be >= 1")


@dataclass(frozen=True)
class ServeConfig:
    db: str = DEFAULT_DB
    """Feedback store: a SQLite file path or a database URL."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 to serve a team on the network, behind TLS)."""
    port: int = 8000
    """TCP port (0 = any free port)."""
    admin_token: Optional[str] = None
    """Token for the admin pages and API; null = read RLHF_ADMIN_TOKEN, else generate one and log it."""
    shuffle_completions: bool = True
    """Show each labeler the completions in their own random order (against position bias)."""
    synchronous: Literal["NORMAL", "FULL"] = "FULL"
    """SQLite fsync policy: FULL survives power loss too; NORMAL survives process crashes only."""
    secure_cookies: bool = False
    """Mark login cookies Secure (set when served over HTTPS)."""
    log_level: str = "warning"
    """uvicorn log level."""
    workers: int = 1
    """uvicorn worker processes serving the one store (SQLite file or PostgreSQL); about one per CPU core."""
    threads: int = 4
    """Request threads per worker: enough to overlap fsync and lock waits; more only queue on the GIL."""
    pool_size: int = 20
    """Database connections per worker process, at most (PostgreSQL: keep workers x pool_size < max_connections)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.pool_size < 1 or self.threads < 1:
            raise ValueError("pool_size and threads must be >= 1")


@dataclass(frozen=True)
class AgreementConfig:
    method: Literal["borda", "bradley_terry"] = "borda"
    """How labelers' rankings combine into the consensus each labeler is compared with."""
    min_gap: float = 0.5
    """Flag a labeler whose mean Kendall tau lies at least this far below the median of the others'..."""
    mad_z: float = 3.0
    """...and more than this many robust standard deviations (1.4826 x MAD) of the others below it."""
    min_labelers: int = 3
    """Flag nobody with fewer scored labelers than this (with two, neither can be told apart)."""
    min_items: int = 1
    """Score only labelers who share at least this many items with others."""
    max_tie_rate: float = 0.9
    """Flag a labeler who ties at least this share of the completion pairs they rank (thumbs: gives one vote to
    every completion of at least this share of items): their tau is undefined or says little."""


@dataclass(frozen=True)
class ExportConfig:
    db: str = DEFAULT_DB
    """Feedback store: a SQLite file path or a database URL."""
    project: str = "default"
    """Project to export."""
    out_dir: str = "runs/feedback"
    """Output folder: pairs.jsonl, rankings.jsonl, export_summary.json (+ raw_pairs.jsonl)."""
    method: Literal["borda", "bradley_terry"] = "borda"
    """Consensus over labelers: Borda count or Bradley-Terry strengths."""
    ties: Literal["drop", "half"] = "drop"
    """Tied pairs in the consensus: drop them, or keep both orders at weight 0.5."""
    weighting: Literal["uniform", "agreement"] = "uniform"
    """Pair weights: 1, or the share of labelers who agree with the pair's order."""
    raw_pairs: bool = False
    """Also write raw_pairs.jsonl: every labeler's own pairs, tagged with the labeler."""
    min_rankings: int = 1
    """Leave out items with fewer usable rankings (or thumbs) than this."""
    agreement: AgreementConfig = field(default_factory=AgreementConfig)
    """Agreement settings for the flagged-labeler list in the summary."""


@dataclass(frozen=True)
class SimulationConfig:
    scorer: str = "sentiment"
    """Gold scorer from rlhf.scorers (toxicity, sentiment) that honest simulated labelers rank by."""
    noise: float = 0.5
    """Gaussian noise added to each completion's z-scored gold score before ranking."""
    scale: Literal["item", "absolute"] = "item"
    """item: z-score the gold scores within each item before adding noise (every item gets a strict order);
    absolute: add noise to the raw scores, so near-equal completions stay near-equal (use with tie_margin)."""
    tie_margin: float = 0.0
    """Noisy scores closer than this are submitted as a tie."""
    bad: tuple[str, ...] = ()
    """Names of labelers who rank in reverse (the deliberately bad labeler)."""
    max_items: Optional[int] = None
    """Stop each labeler after this many judgements (null = until no work is left)."""
    seed: int = 0
    """Random seed (each labeler derives its own from it and its name)."""
