"""Markdown tables of leave-sources-out runs (scripts/ablation_folds.sh) and evaluation reports side by side.

    python scripts/fold_table.py runs/abl/mnv2-s0 runs/abl/patch-s0 ... [--report v3=runs/eval/v3_foldA.json]

For a run folder the *last* epoch of ``history.jsonl`` is used (equal budget for every run; no epoch picked on
the held-out data). Figures: pooled AUC / EER / ACER at the run's held-out EER threshold, AUC per held-out source
with both classes, BPCER of live-only sources at that threshold, APCER per attack type. Runs whose name ends in
``-sN`` are also summarised as mean +- sd over seeds.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(spec: str) -> tuple[str, dict]:
    if "=" in spec:
        name, path = spec.split("=", 1)
        rep = json.loads(Path(path).read_text())
        rep = rep.get("metrics", rep)
        return name, rep
    path = Path(spec)
    lines = (path / "history.jsonl").read_text().splitlines()
    return path.name, json.loads(lines[-1])


def fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders, or NAME=evaluate-report.json")
    a = p.parse_args(argv)
    rows = [load(s) for s in a.runs]
    sources = sorted({k for _, r in rows for k in r["per_source"]})
    two_class = [s for s in sources if all((r["per_source"].get(s) or {}).get("auc") is not None for _, r in rows
                                           if s in r["per_source"])]
    one_class = [s for s in sources if s not in two_class]
    types = sorted({k for _, r in rows for k in r["per_attack_type"]})
    head = (["run", "AUC", "EER %", "ACER %"] + [f"AUC {s}" for s in two_class] + [f"BPCER % {s}" for s in one_class]
            + [f"APCER % {t}" for t in types])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in rows:
        pooled = r["pooled"]
        cells = [name, fmt(pooled.get("auc")), fmt(pooled.get("eer"), True), fmt(pooled.get("acer"), True)]
        cells += [fmt((r["per_source"].get(s) or {}).get("auc")) for s in two_class]
        cells += [fmt((r["per_source"].get(s) or {}).get("bpcer"), True) for s in one_class]
        cells += [fmt((r["per_attack_type"].get(t) or {}).get("apcer"), True) for t in types]
        print("| " + " | ".join(cells) + " |")
    seeds = defaultdict(list)
    for name, r in rows:
        m = re.match(r"(.+)-s\d+$", name)
        if m:
            seeds[m.group(1)].append(r)
    multi = {k: v for k, v in seeds.items() if len(v) > 1}
    if multi:
        print("\n| variant (seeds) | AUC mean +- sd | EER % mean +- sd | mean source AUC |")
        print("|---|---|---|---|")
        for k, reps in multi.items():
            auc = [r["pooled"]["auc"] for r in reps]
            eer = [100 * r["pooled"]["eer"] for r in reps]
            src = [np.mean([r["per_source"][s]["auc"] for s in two_class if s in r["per_source"]]) for r in reps]
            print(f"| {k} ({len(reps)}) | {np.mean(auc):.3f} +- {np.std(auc):.3f} | {np.mean(eer):.1f} +- "
                  f"{np.std(eer):.1f} | {np.mean(src):.3f} +- {np.std(src):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
