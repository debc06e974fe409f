"""A self-contained HTML report (matplotlib PNGs embedded as base64) answering: did alignment work?"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from rlhf.data import atomic_write  # noqa: E402

BASE_C, ALIGNED_C = "#9aa5b1", "#2f7ed8"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_distributions(per: dict, key: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    lo = min(min(per["base"][key]), min(per["aligned"][key]))
    hi = max(max(per["base"][key]), max(per["aligned"][key]))
    bins = 20 if hi > lo else 1
    ax.hist(per["base"][key], bins=bins, range=(lo, hi or 1), alpha=0.65, color=BASE_C, label="base")
    ax.hist(per["aligned"][key], bins=bins, range=(lo, hi or 1), alpha=0.65, color=ALIGNED_C, label="aligned")
    ax.set_title(title)
    ax.set_ylabel("completions")
    ax.legend()
    return _png(fig)


def plot_before_after(summary: dict, keys: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    x = range(len(keys))
    b = [summary["policies"]["base"][k]["mean"] for k in keys]
    a = [summary["policies"]["aligned"][k]["mean"] for k in keys]
    ax.bar([i - 0.2 for i in x], b, width=0.4, color=BASE_C, label="base")
    ax.bar([i + 0.2 for i in x], a, width=0.4, color=ALIGNED_C, label="aligned")
    ax.set_xticks(list(x), keys, rotation=15)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title("Mean score, before vs after")
    ax.legend()
    return _png(fig)


def plot_curves(history: list[dict], keys: list[tuple[str, str]], title: str, hline: float | None = None) -> str | None:
    keys = [(k, label) for k, label in keys if any(k in h for h in history)]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for k, label in keys:
        pts = [(h.get("step", i + 1), h[k]) for i, h in enumerate(history) if k in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
    if hline is not None:
        ax.axhline(hline, color="#d9534f", ls="--", lw=1, label="target")
    ax.set_xlabel("PPO step")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def verdict(summary: dict) -> dict[str, Any]:
    """Headline: did the gold toxicity go down, and how sure are we (win-rate CI)?"""
    before, after = summary.get("toxicity_before"), summary.get("toxicity_after")
    wr = summary["win_rate"]
    hacked = summary["reward_hacking"]["flagged"]
    if before is None or after is None:
        ok = wr["low"] > 0.5
        text = f"Win rate {wr['value']:.0%} (95% CI {wr['low']:.0%}–{wr['high']:.0%}) under {summary['judge']}."
    else:
        ok = after < before
        change = (after - before) / before if before else 0.0
        text = (
            f"Gold toxicity {before:.3f} → {after:.3f} ({change:+.0%}); aligned wins {wr['value']:.0%} of prompts "
            f"(95% CI {wr['low']:.0%}–{wr['high']:.0%}) under {summary['judge']}."
        )
    status = "warn" if hacked else ("good" if ok else "bad")
    title = {
        "good": "Alignment worked",
        "bad": "Alignment did not improve the gold metric",
        "warn": "Possible reward hacking — read the check below",
    }[status]
    return {"status": status, "title": title, "text": text}


def write_report(out_dir: Path, summary: dict, per: dict, extra: dict) -> Path:
    """Render report.html into `out_dir`. `extra` may hold `reward_model`, `ppo_history`, `agreement`, `stages`."""
    history = extra.get("ppo_history") or []
    gold = [k for k in ("toxicity", "sentiment") if k in per["base"]]
    plots = {}
    if "toxicity" in per["base"]:
        plots["Gold toxicity per completion (lower is better)"] = plot_distributions(per, "toxicity", "Toxicity probability")
    if summary.get("learned_reward"):
        plots["Learned reward per completion"] = plot_distributions(per, summary["learned_reward"], "Learned reward")
    keys = gold + ([summary["learned_reward"]] if summary.get("learned_reward") else [])
    if keys:
        plots["Before vs after"] = plot_before_after(summary, keys)
    for title, curve_keys, hline in (
        ("PPO reward", [("reward/raw_mean", "raw reward"), ("reward/normalized_mean", "normalised reward")], None),
        ("PPO KL to reference", [("kl/mean", "KL")], extra.get("kl_target")),
    ):
        png = plot_curves(history, curve_keys, title, hline)
        if png:
            plots[title] = png
    env = Environment(loader=PackageLoader("rlhf.evaluate", "templates"), autoescape=select_autoescape())
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.0%}"
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    html = env.get_template("report.html.j2").render(
        s=summary, v=verdict(summary), plots=plots, extra=extra, gold=gold,
        metric_rows=headline_rows(summary), extra_json=json.dumps(extra.get("stages", {}), indent=2),
    )
    path = out_dir / "report.html"
    with atomic_write(path) as fh:
        fh.write(html)
    return path


def headline_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(metric, base, aligned, better) rows: the table printed in the terminal and at the top of the report."""
    b, a = summary["policies"]["base"], summary["policies"]["aligned"]
    rows = []
    for key, label, better in (
        ("toxicity", "gold toxicity (mean P(toxic))", "lower"),
        ("sentiment", "gold sentiment (VADER compound)", "higher"),
        (summary.get("learned_reward"), "learned reward", "higher"),
    ):
        if key and key in b:
            rows.append((label, f"{b[key]['mean']:.3f}", f"{a[key]['mean']:.3f}", better))
    rows.append(("KL to base (nats/seq)", "0", f"{a['kl_to_base']:.2f}", "small"))
    rows.append(("response length (tokens)", f"{b['response_length']['mean']:.1f}", f"{a['response_length']['mean']:.1f}", ""))
    rows.append(("distinct-2", f"{b['distinct_2']:.3f}", f"{a['distinct_2']:.3f}", "higher"))
    wr = summary["win_rate"]
    rows.append(("win rate of aligned (judge)", "", f"{wr['value']:.0%} [{wr['low']:.0%}, {wr['high']:.0%}]", "> 50%"))
    return rows
