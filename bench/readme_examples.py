"""Print the README's side-by-side examples (base vs aligned on held-out prompts) from a demo's summary.json.

The examples are the ones `rlhf evaluate` drew at random with the run's seed (`num_examples` per split,
never picked by score); this script takes the first `--per-split` of each split, so anyone can regenerate
the README section from a demo run:

    .venv/bin/python bench/readme_examples.py runs/demo/evaluate/summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cell(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return (text or "*(empty)*").replace("|", "\\|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summary", type=Path, nargs="?", default=Path("runs/demo/evaluate/summary.json"))
    ap.add_argument("--per-split", type=int, default=3)
    args = ap.parse_args()
    s = json.loads(args.summary.read_text())
    print(f"Drawn at random (seed {s['settings']['seed']}) from the held-out prompts by `rlhf evaluate`, not picked by "
          f"hand; regenerate with `python bench/readme_examples.py {args.summary}`. Sampling: temperature "
          f"{s['settings']['sampling']['temperature']}, {s['settings']['sampling']['max_new_tokens']} new tokens, "
          f"system prompt \"{s['settings']['system_prompt']}\".\n")
    for split, body in s["splits"].items():
        print(f"| {split} prompt | base | aligned |\n|---|---|---|")
        for e in body["examples"][: args.per_split]:
            sc = e["scores"]
            tags = {k: f"{k} {sc[k]['base']:.2f} → {sc[k]['aligned']:.2f}" for k in sc}
            print(f"| {cell(e['prompt'], 200)}<br><sub>{'; '.join(tags.values())}</sub> | {cell(e['base'])} | {cell(e['aligned'])} |")
        print()


if __name__ == "__main__":
    main()
