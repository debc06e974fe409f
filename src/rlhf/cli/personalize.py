"""`rlhf personalize` (per-user reward parts and adapters, once or --watch) and `rlhf personal status|export|delete`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, err_console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.feedback.config import DEFAULT_DB

PANEL = "7. Personalisation"
DbOpt = Annotated[Optional[str], typer.Option("--db", help=f"Feedback store: SQLite path or URL (default {DEFAULT_DB}).")]
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Personal folder (default runs/personal).")]

personal = typer.Typer(help="Users' personal data: status, export, delete.", no_args_is_help=True)
app.add_typer(personal, name="personal", rich_help_panel=PANEL)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


@app.command(rich_help_panel=PANEL)
def personalize(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    db: DbOpt = None,
    out_dir: OutOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Base policy (the one the chat server holds).")] = None,
    shared_adapter: Annotated[Optional[str], typer.Option(help="Shared aligned adapter (`rlhf ppo` folder) to start from and stay KL-bounded to.")] = None,
    user: Annotated[Optional[list[str]], typer.Option("--user", "-u", help="Only this user (repeatable).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="RL steps per user update (of the configured optimizer).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain everyone, new feedback or not.")] = False,
    watch: Annotated[Optional[float], typer.Option(help="Run again every this many seconds until interrupted.")] = None,
) -> None:
    """Train or update each user's reward part and LoRA adapter from their new chat feedback (incremental)."""
    from rlhf.personalize.config import PersonalizeConfig
    from rlhf.personalize.layout import Busy
    from rlhf.personalize.train import run_personalize

    flags = {f"{o}.max_steps": steps for o in ("rloo", "ppo", "grpo")} if steps is not None else {}
    cfg = build_config(PersonalizeConfig, config, set_, db=db, out_dir=out_dir, model=model,
                       shared_adapter=shared_adapter, users=user or None, force=force or None, **flags)
    while True:
        try:
            with user_errors():
                _run_once(cfg, run_personalize)
        except Busy as e:
            err_console.print(f"[yellow]skipped:[/yellow] {e}")
            if watch is None:
                raise typer.Exit(3) from None
        if watch is None:
            return
        console.print(f"next run in {watch:.0f} s (Ctrl-C to stop)")
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


def _run_once(cfg, run_personalize) -> None:  # noqa: ANN001
    with progress_bar("personalize") as update:

        def on_event(kind: str, data: dict) -> None:
            if kind == "reward_step":
                update(data["step"], data["total"], info=f"shared reward  loss {data['loss']:.3f}")
            elif kind == "user_start":
                update(0, data["steps"], info=f"{data['user']}: {data['optimizer']} from {data['started_from']}")
            elif kind == "policy_step":
                m = data["metrics"]
                update(m["step"], info=f"{data['user']}: reward {m['reward/raw_mean']:.3f}  KL {m['kl/mean']:.2f}")

        res = run_personalize(cfg, on_event)
    console.print(f"shared reward v{res.reward_version}: {'retrained' if res.shared_retrained else 'kept'} ({res.shared_reason})")
    table = Table("user", "pairs", "held-out acc (own / shared)", "adapter", "reward first -> last", "KL")
    for u in res.users:
        h, p = u.heldout, u.policy
        acc = f"{_pct(h.get('accuracy'))} / {_pct(h.get('shared_accuracy'))} of {h['pairs']}" if h else ""
        rw = f"{p['reward_first']:.3f} -> {p['reward_last']:.3f}" if p.get("reward_last") is not None else ""
        table.add_row(u.name, str(u.pairs), acc, f"{u.action}" + (f" v{u.version}" if u.version else "") +
                      (f" ({u.reason})" if u.reason else ""), rw, f"{p['kl_last']:.2f}" if p.get("kl_last") is not None else "")
    console.print(table)
    console.print(f"-> {res.out_dir} ({res.seconds:.0f} s)")


@personal.command("status")
def status(db: DbOpt = None, out_dir: OutOpt = None) -> None:
    """Each user's choices, reward part and live adapter, and whether the next run would update them."""
    from rlhf.feedback.db import open_database
    from rlhf.personalize.config import DEFAULT_PERSONAL_DIR
    from rlhf.personalize.users import user_status

    with user_errors():
        rows = user_status(open_database(db or DEFAULT_DB), out_dir or DEFAULT_PERSONAL_DIR)
    table = Table("id", "user", "choices", "reward part", "adapter", "due")
    for r in rows:
        table.add_row(str(r.labeler_id), r.name, str(r.choices), "yes" if r.reward_part else "",
                      f"v{r.adapter_version}" if r.adapter_version else "", "yes" if r.due else "")
    console.print(table)


@personal.command("export")
def export(
    user: Annotated[str, typer.Argument(help="User name or id.")],
    output: Annotated[Path, typer.Option("--output", help="JSON file to write.")],
    db: DbOpt = None,
    out_dir: OutOpt = None,
) -> None:
    """Write everything held about a user (account, chats, choices, labeling, reward part, file list) as JSON."""
    from rlhf.data import write_json
    from rlhf.feedback import store
    from rlhf.feedback.db import open_database
    from rlhf.personalize.config import DEFAULT_PERSONAL_DIR
    from rlhf.personalize.layout import PersonalDir
    from rlhf.personalize.users import export_user_data

    with user_errors():
        try:
            with open_database(db or DEFAULT_DB).session() as s:
                ref = int(user) if user.isdigit() else user
                data = export_user_data(s, PersonalDir.at(out_dir or DEFAULT_PERSONAL_DIR), store.get_labeler(s, ref))
        except store.NotFound as e:
            err_console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
        write_json(output, json.loads(json.dumps(data, default=str)))
    console.print(f"{data['user']['name']}: {len(data['conversations'])} conversations, {len(data['files'])} files -> {output}")


@personal.command("delete")
def delete(
    user: Annotated[str, typer.Argument(help="User name or id.")],
    db: DbOpt = None,
    out_dir: OutOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user with all their feedback, reward part and adapters."""
    from rlhf.feedback import store
    from rlhf.feedback.db import open_database
    from rlhf.personalize.config import DEFAULT_PERSONAL_DIR
    from rlhf.personalize.layout import PersonalDir
    from rlhf.personalize.users import delete_user_data

    if not yes:
        typer.confirm(f"Delete {user} and all their data?", abort=True)
    with user_errors():
        try:
            gone = delete_user_data(open_database(db or DEFAULT_DB), PersonalDir.at(out_dir or DEFAULT_PERSONAL_DIR),
                                    int(user) if user.isdigit() else user)
        except store.NotFound as e:
            err_console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
    rows = ", ".join(f"{v} {k}" for k, v in gone.removed.items() if v)
    console.print(f"Deleted {gone.user}: {rows or 'no rows'}; {len(gone.files)} files.")
