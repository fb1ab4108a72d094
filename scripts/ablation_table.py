"""Collate the ablation runs (scripts/ablation.sh) into a Markdown table.

    python scripts/ablation_table.py runs/ablation > docs/ablation.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"dense": "CLIP (dense)", "softmoe": "CLIP + Soft MoE", "la-a": "CLIP + La-SoftMoE (reading A)",
         "la-b": "CLIP + La-SoftMoE (reading B)"}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def main(root: Path) -> None:
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        print(f"\n### validation: {split_dir.name}\n")
        print("| model | epochs | AUC % | EER % | ACER % (val EER threshold) | mean per-source error % | worst source |")
        print("|---|---|---|---|---|---|---|")
        for key, name in NAMES.items():
            hist = split_dir / key / "history.jsonl"
            if not hist.is_file():
                continue
            rows = [json.loads(line) for line in hist.read_text().splitlines() if line.strip()]
            last = rows[-1]
            p = last["pooled"]
            worst = max(((src, max(v for v in (m.get("apcer"), m.get("bpcer")) if v is not None))
                         for src, m in last["per_source"].items()
                         if m.get("apcer") is not None or m.get("bpcer") is not None), key=lambda t: t[1])
            print(f"| {name} | {last['epoch']} | {pct(p.get('auc'))} | {pct(p.get('eer'))} | {pct(p.get('acer'))} | "
                  f"{pct(last['selection'])} | {worst[0]} {pct(worst[1])} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation"))
