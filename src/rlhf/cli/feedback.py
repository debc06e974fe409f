"""`rlhf feedback ...` (import, export, labelers, agreement, exclude) and `rlhf serve`."""

from __future__ import annotations

import contextlib
from typing import Annotated, Iterator, Optional

import typer
from rich.table import Table

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, err_console, user_errors
from rlhf.cli.app import app
from rlhf.feedback.config import DEFAULT_DB, AgreementConfig, ExportConfig, ImportConfig, ServeConfig

feedback = typer.Typer(
    help="Human feedback: import items, manage labelers, check agreement, export pairs.", no_args_is_help=True
)
labelers = typer.Typer(help="Labeler accounts.", no_args_is_help=True)
feedback.add_typer(labelers, name="labelers")
app.add_typer(feedback, name="feedback", rich_help_panel="2. Human feedback")

DbOpt = Annotated[Optional[str], typer.Option("--db", help=f"SQLite path or database URL [default: {DEFAULT_DB}].")]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name.")]


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    from rlhf.feedback.store import Conflict, NotFound

    with user_errors():
        try:
            yield
        except (NotFound, Conflict, ValueError) as e:
            err_console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None


@feedback.command("import")
def import_(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    generations: Annotated[
        Optional[str], typer.Option("--generations", "-g", help="`rlhf generate` output (.jsonl).")
    ] = None,
    db: DbOpt = None,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project (created if new).")] = None,
    criterion: Annotated[Optional[str], typer.Option(help="What labelers judge by.")] = None,
    instructions: Annotated[Optional[str], typer.Option(help="Markdown text or a .md file.")] = None,
    mode: Annotated[Optional[str], typer.Option(help="rank or thumbs.")] = None,
    k: Annotated[Optional[int], typer.Option("--k", help="Labelers per item.")] = None,
) -> None:
    """Load generated completions into a labeling project."""
    from rlhf.feedback.service import run_import

    cfg = build_config(
        ImportConfig, config, set_, generations=generations, db=db, project=project, criterion=criterion,
        instructions=instructions, mode=mode, labelers_per_item=k,
    )
    with _errors():
        s = run_import(cfg)
    console.print(
        f"Project [bold]{s.project}[/bold] (id {s.project_id}): added {s.added} items"
        + (f", skipped {s.skipped} already there" if s.skipped else "") + f"; {s.items} items in total."
    )


@feedback.command("export")
def export(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Project name.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    method: Annotated[Optional[str], typer.Option(help="Consensus: borda or bradley_terry.")] = None,
    ties: Annotated[Optional[str], typer.Option(help="Tied pairs: drop or half.")] = None,
    raw: Annotated[Optional[bool], typer.Option("--raw/--no-raw", help="Also write raw per-labeler pairs.")] = None,
) -> None:
    """Write consensus rankings and preference pairs (excluded labelers left out)."""
    from rlhf.feedback.service import run_export

    cfg = build_config(
        ExportConfig, config, set_, db=db, project=project, out_dir=out_dir, method=method, ties=ties, raw_pairs=raw
    )
    with _errors():
        s = run_export(cfg)
    table = Table(title=f"export of {s.project}", show_header=False)
    for key, value in [
        ("items", s.items), ("pairs", s.pairs), ("dropped ties", s.dropped_ties),
        ("excluded labelers", ", ".join(s.excluded_labelers) or "none"),
        ("flagged labelers", ", ".join(s.flagged_labelers) or "none"),
        ("unusable items (flagged)", s.unusable_items), ("items without enough judgements", s.unlabeled_items),
    ] + ([("raw pairs", s.raw_pairs)] if cfg.raw_pairs else []):
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"-> {s.out_dir}/pairs.jsonl, rankings.jsonl, export_summary.json")


@labelers.command("add")
def labelers_add(
    names: Annotated[list[str], typer.Argument(help="One or more labeler names.")],
    db: DbOpt = None,
) -> None:
    """Create labelers and print `name token` per line (tokens are shown once, stored hashed)."""
    from rlhf.feedback.db import open_database
    from rlhf.feedback.service import add_labeler

    with _errors():
        store = open_database(db or DEFAULT_DB)
        for name in names:
            console.print(f"{name} {add_labeler(store, name)}", highlight=False, soft_wrap=True)


@labelers.command("list")
def labelers_list(db: DbOpt = None) -> None:
    """List labelers."""
    from rlhf.feedback import store
    from rlhf.feedback.db import open_database

    with _errors(), open_database(db or DEFAULT_DB).session() as s:
        for lab in store.list_labelers(s):
            console.print(f"{lab.id} {lab.name}" + ("" if lab.active else " (inactive)"), highlight=False)


@feedback.command("agreement")
def agreement_cmd(
    project: ProjectOpt = "default",
    db: DbOpt = None,
    set_: SetOpt = None,
    exclude_flagged: Annotated[bool, typer.Option(help="Exclude the flagged labelers from export.")] = False,
) -> None:
    """Report agreement: each labeler's Kendall tau vs consensus, Krippendorff's alpha, flagged labelers."""
    from rlhf.feedback.db import open_database
    from rlhf.feedback.service import agreement, ai_agreement, set_excluded

    cfg = build_config(AgreementConfig, None, set_)
    with _errors():
        store = open_database(db or DEFAULT_DB)
        report = agreement(store, project, cfg)
        ai = ai_agreement(store, project, cfg)
        if exclude_flagged:
            for name in report.flagged:
                set_excluded(store, project, name, True, "flagged by `rlhf feedback agreement`")
    alpha = "n/a" if report.alpha is None else f"{report.alpha:.3f}"
    console.print(f"Krippendorff's alpha ({report.alpha_metric}) over {report.items} items: [bold]{alpha}[/bold]")
    table = Table("labeler", "items", "tau vs consensus", "status")
    for a in report.labelers:
        status = ("[red]flagged[/red] " if a.flagged else "") + ("excluded" if a.excluded else "")
        table.add_row(a.labeler, str(a.items), "n/a" if a.score is None else f"{a.score:+.3f}", status or "ok")
    console.print(table)
    if exclude_flagged and report.flagged:
        console.print(f"Excluded from export: {', '.join(report.flagged)}")
    if ai.labelers:
        _print_ai_agreement(ai)


def _print_ai_agreement(ai) -> None:  # noqa: ANN001
    """AI labelers (constitutional AI) against the human consensus; they are never part of it or of the export."""

    def num(x, fmt: str) -> str:  # noqa: ANN001
        return "n/a" if x is None else format(x, fmt)

    console.print("[bold]AI labelers vs the human consensus[/bold] (left out of the consensus and the export):")
    for r in ai.labelers:
        a = r.agreement
        share = (f"agrees with it on {a.agree}/{a.pairs} pairs ({num(a.agreement, '.0%')}), tau {num(a.tau, '+.3f')}"
                 if a.pairs else "no item shared with people yet")
        console.print(
            f"  {a.labeler} ({r.model}): judged {r.judged} items, {a.items} shared with people; {share}; "
            f"mean confidence {num(r.mean_confidence, '.2f')}; alpha with it {num(r.alpha_with, '.3f')}, "
            f"people alone {num(ai.alpha_people, '.3f')}", highlight=False, soft_wrap=True)


@feedback.command("exclude")
def exclude(
    labeler: Annotated[str, typer.Argument(help="Labeler name.")],
    project: ProjectOpt = "default",
    db: DbOpt = None,
    undo: Annotated[bool, typer.Option("--undo", help="Include the labeler again.")] = False,
) -> None:
    """Exclude a labeler from a project's consensus and export (or --undo)."""
    from rlhf.feedback.db import open_database
    from rlhf.feedback.service import set_excluded

    with _errors():
        set_excluded(open_database(db or DEFAULT_DB), project, labeler, not undo, "excluded with the CLI")
    console.print(f"{labeler} {'included in' if undo else 'excluded from'} {project}.")


@app.command(rich_help_panel="2. Human feedback")
def serve(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port.")] = None,
    admin_token: Annotated[Optional[str], typer.Option(envvar="RLHF_ADMIN_TOKEN", help="Admin token.")] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Worker processes on the one store (about one per CPU core).")
    ] = None,
) -> None:
    """Serve the labeling web app (FastAPI under uvicorn, in one or several worker processes)."""
    import secrets

    from rlhf.feedback.server import serve as run_server

    cfg = build_config(
        ServeConfig, config, set_, db=db, host=host, port=port, admin_token=admin_token, workers=workers
    )
    if cfg.admin_token is None:
        import dataclasses

        cfg = dataclasses.replace(cfg, admin_token="admin_" + secrets.token_urlsafe(18))
        console.print(f"Admin token for this run: [bold]{cfg.admin_token}[/bold] (set RLHF_ADMIN_TOKEN to fix it)")
    console.print(
        f"Labelers: http://{cfg.host}:{cfg.port}/   Admin: http://{cfg.host}:{cfg.port}/admin   DB: {cfg.db}"
        + (f"   {cfg.workers} workers" if cfg.workers > 1 else "")
    )
    with _errors():
        run_server(cfg)
