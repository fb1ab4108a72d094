"""Soups of fine-tunes on one group split: average, score the split's validation crops, report at the soup's EER.

    python scripts/soup_eval.py --val runs/v5a/val_manifest.csv --out runs/soup \\
        uniform4=runs/v5a/last.safetensors,runs/v6s/last.safetensors,runs/v7d/last.safetensors,runs/v5a-s1/last.safetensors \\
        wise=assets/liveness_default.safetensors:1,runs/v5a/last.safetensors:1

Each NAME=PATH[:WEIGHT],... becomes ``OUT/NAME.safetensors`` (``python -m models.soup``), is scored with torch
eager fp32 (``python -m models.evaluate --scores-csv``) and reported at its own validation EER threshold,
like the trainer's epochs (``OUT/NAME.json``, which ``scripts/fold_table.py NAME=OUT/NAME.json`` reads).
The soup file then gets that threshold stored. Validation sources stay held out from every
ingredient only if all of them were trained on the same split (same ``--split-seed``).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.training import metrics as M  # noqa: E402
from models.training.soup import make_soup  # noqa: E402


def parse(spec: str) -> tuple[str, list[Path], list[float]]:
    name, items = spec.split("=", 1)
    paths, weights = [], []
    for item in items.split(","):
        path, _, w = item.partition(":")
        paths.append(Path(path))
        weights.append(float(w) if w else 1.0)
    return name, paths, weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("soups", nargs="+", help="NAME=PATH[:WEIGHT],PATH[:WEIGHT],...")
    p.add_argument("--val", type=Path, required=True, help="the split's val_manifest.csv (a run folder has it)")
    p.add_argument("--out", type=Path, default=Path("runs/soup"))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for spec in a.soups:
        name, paths, weights = parse(spec)
        model = a.out / f"{name}.safetensors"
        make_soup(paths, model, weights, fp16=True)
        scores_csv = a.out / f"{name}_scores.csv"
        subprocess.run([sys.executable, "-m", "models.evaluate", "--model", str(model), "--manifest", str(a.val),
                        "--backend", "torch", "--threads", str(a.threads), "--scores-csv", str(scores_csv),
                        "--report", str(a.out / f"{name}_stored.json"), "--log-level", "WARNING"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        with open(scores_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        labels = np.array([int(r["label"]) for r in rows])
        scores = np.array([float(r["score"]) for r in rows])
        _, threshold = M.eer(labels, scores)
        rep = M.report(labels, scores, threshold, sources=[r["source"] for r in rows],
                       attack_types=[r["attack_type"] for r in rows])
        (a.out / f"{name}.json").write_text(json.dumps({"metrics": rep, "ingredients": [str(x) for x in paths],
                                                        "weights": weights}, indent=1, default=float))
        soup = load_checkpoint(model)  # store the chosen threshold (re-averaging the ingredients is not needed)
        save_checkpoint(model, soup.model, threshold=float(threshold), data_card=soup.data_card,
                        dtype=torch.float16)
        pooled = rep["pooled"]
        print(f"{name}: AUC {pooled['auc']:.4f}  EER {100 * pooled['eer']:.2f} %  threshold {threshold:.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
