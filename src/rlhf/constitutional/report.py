"""The CAI part of the run's report: what each stage changed (paired deltas with 95% CIs), how the judge
and the reward model agree with gold, and samples to read. Added to the demo's report.html."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from rlhf.constitutional.measure import paired  # noqa: E402
from rlhf.data import atomic_write, read_records  # noqa: E402

GOOD, BAD, NEUTRAL = "#31b237", "#e12d39", "#9aa5b1"
MARKER = "<!-- constitutional-ai -->"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def final_toxicity(eval_dir: Path) -> dict | None:
    """Base vs constitutional policy, paired per held-out prompt, from the evaluation's completions."""
    files = [Path(eval_dir) / f"completions_{k}.jsonl" for k in ("base", "aligned")]
    if not all(f.exists() for f in files):
        return None
    base, aligned = ([r["toxicity"] for _, r in read_records(f)] for f in files)
    return paired(base, aligned)


def delta_rows(stages: dict, final: dict | None) -> list[tuple[str, dict, str]]:
    """(label, paired result, 'lower'|'higher' is better) for every measured change, in chain order."""
    rv = stages.get("revise", {}).get("measure", {})
    sf = stages.get("sft", {}).get("measure", {})
    rows = [
        ("revision vs answer: toxicity", rv.get("toxicity"), "lower"),
        ("revision vs answer: relevance", rv.get("relevance"), "higher"),
        ("SFT vs base, red-team: toxicity", sf.get("redteam_toxicity"), "lower"),
        ("SFT vs base, helpful: relevance", sf.get("helpful_relevance"), "higher"),
        ("SFT vs base, helpful: fluency", sf.get("helpful_fluency"), "higher"),
        ("final vs base, red-team: toxicity", final, "lower"),
    ]
    return [(label, r, better) for label, r, better in rows if r and r.get("n")]


def plot_deltas(rows: list[tuple[str, dict, str]]) -> str:
    """One small axis per change (units differ): mean paired difference and its 95% CI."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(6.2, 0.75 * len(rows) + 0.6), squeeze=False)
    for ax, (label, r, better) in zip(axes[:, 0], rows):
        d = r["delta"]
        good = d["high"] < 0 if better == "lower" else d["low"] > 0
        bad = d["low"] > 0 if better == "lower" else d["high"] < 0
        color = GOOD if good else BAD if bad else NEUTRAL
        ax.errorbar([d["value"]], [0], xerr=[[d["value"] - d["low"]], [d["high"] - d["value"]]], fmt="o", color=color, capsize=4)
        ax.axvline(0, color="black", lw=0.6)
        span = max(abs(d["low"]), abs(d["high"]), 1e-3) * 1.3
        ax.set_xlim(-span, span)
        ax.set_yticks([])
        ax.set_title(f"{label} ({better} is better): {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", fontsize=8.5, loc="left")
    fig.tight_layout()
    return _png(fig)


def plot_agreement(stages: dict) -> str | None:
    """The judge and the reward model against gold on clearly separated pairs (50% = chance), and position bias."""
    judge = stages.get("ai_feedback", {}).get("measure")
    gold = stages.get("reward", {}).get("measure", {}).get("gold")
    bars = []
    if judge and judge["clear_pairs"]:
        bars += [("judge, both orders", judge["agreement"]), ("judge, one order", judge["first_order_agreement"])]
    if gold and gold["clear_pairs"]:
        bars.append(("reward model", gold["agreement"]))
    if judge and judge["compared_pairs"]:
        bars.append(("position bias (flips)", judge["position_bias"]))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 3.0))
    for k, (label, e) in enumerate(bars):
        color = NEUTRAL if "bias" in label else (GOOD if e["low"] > 0.5 else BAD if e["high"] < 0.5 else NEUTRAL)
        ax.bar(k, e["value"], color=color)
        ax.errorbar(k, e["value"], yerr=[[e["value"] - e["low"]], [e["high"] - e["value"]]], color="black", capsize=4)
    ax.axhline(0.5, color="#e12d39", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"Agreement with gold toxicity on pairs differing by >= {(judge or gold)['margin']}")
    ax.legend()
    return _png(fig)


def render_section(stages: dict, eval_dir: Path, verdict: dict) -> str:
    final = final_toxicity(eval_dir)
    rows = delta_rows(stages, final)
    plots = {}
    if rows:
        plots["What each stage changed (paired, 95% CI; green = better, red = worse, grey = unclear)"] = plot_deltas(rows)
    agreement = plot_agreement(stages)
    if agreement:
        plots["AI feedback and reward model vs gold"] = agreement
    env = Environment(loader=PackageLoader("rlhf.constitutional", "templates"), autoescape=select_autoescape())
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.0%}"
    return env.get_template("cai_section.html.j2").render(st=stages, rows=rows, plots=plots, final=final, v=verdict)


def add_cai_section(report_path: Path, stages: dict, eval_dir: Path, verdict: dict) -> Path:
    """Insert (or replace) the CAI section in the evaluation's report.html, before its run details."""
    html = Path(report_path).read_text(encoding="utf-8")
    if MARKER in html:
        start = html.index(MARKER)
        html = html[:start] + html[html.index(MARKER, start + 1) + len(MARKER):]
    section = f"{MARKER}\n{render_section(stages, eval_dir, verdict)}\n{MARKER}"
    anchor = next((a for a in ("<h2>Run</h2>", "</body>") if a in html), None)
    html = html.replace(anchor, section + "\n" + anchor, 1) if anchor else html + section
    with atomic_write(report_path) as fh:
        fh.write(html)
    return Path(report_path)
