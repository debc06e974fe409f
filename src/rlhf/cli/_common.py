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


@contextlib.contextmanager
def stage_progress(titles: dict[str, str]) -> Iterator[tuple[Callable[[str, str], None], Callable[[str, int, int, str], None]]]:
    """(on_stage, on_progress) callbacks of a staged pipeline (`rlhf demo`, `rlhf constitutional run`): one bar per
    stage; a `StageIncomplete` from the pipeline exits with code 3, other user errors as `user_errors` does."""
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}")]
    with user_errors(), Progress(*cols, console=err_console) as progress:
        tasks: dict[str, int] = {}

        def on_stage(name: str, event: str) -> None:
            if event == "skip":
                progress.console.print(f"[dim]{name}: already done, skipped[/]")
            elif event == "start":
                tasks[name] = progress.add_task(titles[name], total=None, info="")
            elif event == "done":
                t = progress.tasks[tasks[name]]
                progress.update(tasks[name], total=t.total or 1, completed=t.total or 1, info="[green]done")

        def on_progress(name: str, done: int, total: int, info: str) -> None:
            if name in tasks:
                progress.update(tasks[name], completed=done, total=total, info=info)

        from rlhf.stages import StageIncomplete

        try:
            yield on_stage, on_progress
        except StageIncomplete as e:
            err_console.print(f"[yellow]incomplete:[/yellow] {e}")
            raise typer.Exit(3) from None
