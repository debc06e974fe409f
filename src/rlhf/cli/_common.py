"""Shared CLI plumbing: the console, config options, progress bars and error reporting."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rlhf.config import ConfigError, load_config
from rlhf.data import DataError
from rlhf.distributed import launched_rank

MAIN = launched_rank() == 0
"""Under `accelerate launch`, only rank 0 prints, logs below warnings and shows progress bars."""
console = Console(stderr=False, quiet=not MAIN)
err_console = Console(stderr=True)

T = TypeVar("T")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file for this stage.")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: --set sampling.temperature=0.7 (repeatable)."),
]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=(logging.DEBUG if verbose else logging.INFO) if MAIN else logging.WARNING, format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)], force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # transformers' per-load reports and tqdm bars would bury the stage progress bars.
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def build_config(cls: type[T], config: Path | None, overrides: list[str] | None, **flags: Any) -> T:
    """defaults <- YAML <- --set overrides <- explicit flags; bad input exits with a clear message."""
    try:
        return load_config(cls, config, overrides or (), **flags)
    except ConfigError as e:
        err_console.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn data/config errors into a one-line message and exit code 2 instead of a traceback."""
    try:
        yield
    except (DataError, ConfigError, FileNotFoundError) as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields `update(done, total=None, **fields)`."""
    cols = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    ]
    with Progress(*cols, console=err_console, transient=False, disable=not MAIN) as progress:
        task = progress.add_task(description, total=total, info="")

        def update(done: int, total: int | None = None, info: str = "") -> None:
            progress.update(task, completed=done, total=total if total is not None else progress.tasks[task].total, info=info)

        yield update
