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


def plot_split(pol: dict, keys: list[tuple[str, str]], split: str) -> str:
    """One figure per split: base vs aligned histograms of each per-completion score."""
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 2.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], keys):
        base, aligned = pol["base"][key], pol["aligned"][key]
        lo, hi = min(min(base), min(aligned)), max(max(base), max(aligned))
        rng = (lo, hi if hi > lo else lo + 1)
        ax.hist(base, bins=20, range=rng, alpha=0.65, color=BASE_C, label="base")
        ax.hist(aligned, bins=20, range=rng, alpha=0.65, color=ALIGNED_C, label="aligned")
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel(f"{split}: completions")
    axes[0][0].legend(fontsize=8)
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


STATUS_CLASS = {"aligned": "good", "inconclusive": "warn", "regressed": "bad"}
TITLES = {
    "aligned": "Aligned",
    "inconclusive": "Inconclusive",
    "regressed": "Regressed",
}


def verdict(summary: dict) -> dict[str, Any]:
    """The verdict of summary["verdict"] for display: {status, css, title, text, reasons}."""
    v = summary.get("verdict") or {"status": "inconclusive", "reasons": ["no verdict in this summary"]}
    tgt = summary.get("target") or {}
    split = summary.get("splits", {}).get(tgt.get("split"), {})
    m = split.get("metrics", {}).get(tgt.get("metric"))
    text = ""
    if m:
        rel = m["relative"]["value"]
        text = (f"{tgt['split']} {tgt['metric']} {m['base']:.3f} → {m['aligned']:.3f}"
                + (f" ({rel:+.0%})" if rel == rel else "")
                + f"; difference {m['diff']['value']:+.3f}, 95% CI [{m['diff']['low']:+.3f}, {m['diff']['high']:+.3f}].")
    return {"status": v["status"], "css": STATUS_CLASS[v["status"]], "title": TITLES[v["status"]], "text": text,
            "reasons": v["reasons"]}


def write_report(out_dir: Path, summary: dict, per: dict, extra: dict) -> Path:
    """Render report.html into `out_dir`. `per[split][policy][metric]` are per-completion scores;
    `extra` may hold `reward_model`, `ppo_history`, `agreement`, `stages`, `kl_target`."""
    history = extra.get("ppo_history") or []
    plots = {}
    for split, pol in per.items():
        keys = [(k, t) for k, t in (("toxicity", "toxicity (lower is better)"), ("relevance", "relevance"),
                                    ("fluency", "fluency (log-prob/token)")) if pol["base"].get(k)]
        keys += [(k, "learned reward") for k in summary.get("learned_rewards", [])[:1] if pol["base"].get(k)]
        if keys:
            plots[f"{split}: base vs aligned, per completion"] = plot_split(pol, keys, split)
    for title, curve_keys, hline in (
        ("PPO reward", [("reward/raw_mean", "raw reward"), ("reward/normalized_mean", "normalised reward")], None),
        ("PPO KL to reference", [("kl/mean", "KL")], summary.get("kl", {}).get("target") or extra.get("kl_target")),
    ):
        png = plot_curves(history, curve_keys, title, hline)
        if png:
            plots[title] = png
    env = Environment(loader=PackageLoader("rlhf.evaluate", "templates"), autoescape=select_autoescape())
    env.filters["pct"] = lambda v: "–" if v is None or v != v else f"{v:.0%}"
    env.filters["num"] = lambda v, d=3: "–" if v is None or v != v else f"{v:.{d}f}"
    html = env.get_template("report.html.j2").render(
        s=summary, v=verdict(summary), plots=plots, extra=extra, tables={k: split_rows(summary, k) for k in summary["splits"]},
        extra_json=json.dumps(extra.get("stages", {}), indent=2),
    )
    path = out_dir / "report.html"
    with atomic_write(path) as fh:
        fh.write(html)
    return path


LABELS = {
    "toxicity": "gold toxicity (P(toxic))", "sentiment": "gold sentiment (VADER)", "relevance": "relevance (MiniLM cosine)",
    "fluency": "fluency (log-prob/token)", "response_length": "length (tokens)", "eos_rate": "EOS rate",
    "distinct_1": "distinct-1", "distinct_2": "distinct-2", "kl": "KL to base (nats/response)",
}
ORDER = ("toxicity", "relevance", "fluency", "sentiment")


def split_rows(summary: dict, split: str) -> list[tuple[str, str, str, str, str, str]]:
    """(metric, base, aligned, aligned - base [95% CI], relative, verdict) rows: terminal and report tables."""
    from rlhf.evaluate.verdict import better_worse

    metrics = summary["splits"][split]["metrics"]
    names = [k for k in ORDER if k in metrics] + [k for k, m in metrics.items() if m.get("kind") == "learned"]
    names += [k for k in ("response_length", "eos_rate", "distinct_1", "distinct_2") if k in metrics]
    rows = []
    for k in names:
        m = metrics[k]
        d, r = m["diff"], m["relative"]
        rel = f"{r['value']:+.1%}" if r["value"] == r["value"] else ""
        arrow = "" if m.get("kind") == "shape" else ("↑" if m.get("higher_is_better", True) else "↓")
        label = LABELS.get(k) or f"learned reward ({Path(k.split(':', 1)[-1]).name})"
        rows.append((f"{label} {arrow}".strip(), f"{m['base']:.3f}", f"{m['aligned']:.3f}",
                     f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", rel,
                     "" if m.get("kind") == "shape" else better_worse(m)))
    kl = summary["splits"][split]["kl"]
    rows.append((LABELS["kl"], "0", f"{kl['value']:.2f}", f"[{kl['low']:.2f}, {kl['high']:.2f}]", "", ""))
    return rows
