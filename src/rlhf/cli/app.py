from __future__ import annotations

from typing import Annotated

import typer

from rlhf import __version__
from rlhf.cli._common import setup_logging

app = typer.Typer(
    name="rlhf",
    help="Align language models with human preferences, end to end:\n\n"
    "generate -> feedback (label) -> pairs -> train-reward -> ppo | rloo | grpo (or dpo on the pairs) -> evaluate.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    setup_logging(verbose)


def main() -> None:
    app()
