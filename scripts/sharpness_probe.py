"""Does a model call a crop attack because it is blurry? Per source and label of a manifest: the crops' median
sharpness, and each model's median P(attack) on the crops as they are, resampled through half their resolution,
and unsharp-masked (issue 11: the sharpness shortcut, docs/ablation.md).

    python scripts/sharpness_probe.py --manifest runs/v9p/val_manifest.csv \\
        --model v4=assets/liveness_default.safetensors --model v10s0=runs/v10s0/best.safetensors

A model that has learnt "blurry = attack" raises P(attack) of live crops a lot when they are softened; one that
looks at the attack itself moves little. Sharpness is the variance of the Laplacian of the grey crop at the
model's input size (the first model's).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.preprocess import preprocess, resize_crop, sharpness  # noqa: E402
from models.training.augment import detail_shift  # noqa: E402
from models.training.data import read_manifest  # noqa: E402

VIEWS = ("as is", "half resolution", "sharpened")


def views(crop: np.ndarray) -> dict[str, np.ndarray]:
    """The crop as it is, resampled through half its resolution, and unsharp-masked (amount 0.8); fixed, so every
    model sees the same images."""
    rng = np.random.default_rng(0)
    return {"as is": crop,
            "half resolution": detail_shift(crop, rng, soften=True, factor=(0.5, 0.5)),
            "sharpened": detail_shift(crop, rng, soften=False, amount=(0.8, 0.8))}


def sample(manifest: Path, per_group: int, seed: int) -> dict[tuple[str, int], list[Path]]:
    """Up to ``per_group`` crop paths per (source, label), drawn with ``seed``."""
    groups: dict[tuple[str, int], list[Path]] = defaultdict(list)
    for s in read_manifest(manifest):
        groups[(s.source, s.label)].append(Path(s.path))
    rng = np.random.default_rng(seed)
    return {k: [v[i] for i in sorted(rng.choice(len(v), min(per_group, len(v)), replace=False))]
            for k, v in sorted(groups.items())}


def probe(manifest: Path, models: Sequence[tuple[str, Path]], per_group: int = 48, seed: int = 0) -> list[dict]:
    """One row per (source, label): ``source``, ``label``, ``n``, ``sharpness`` and, per model and view,
    ``"<model> <view>"``: the median P(attack)."""
    import torch

    from models.checkpoint import load_model

    loaded = [(name, load_model(path)) for name, path in models]
    size = loaded[0][1].preprocessing.size
    rows = []
    for (source, label), paths in sample(manifest, per_group, seed).items():
        crops = []
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"unreadable image in {manifest}: {p}")
            crops.append(resize_crop(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size))
        row = {"source": source, "label": label, "n": len(crops),
               "sharpness": float(np.median([sharpness(c) for c in crops]))}
        per_view = [views(c) for c in crops]
        for name, ck in loaded:
            model = ck.model.eval()
            for view in VIEWS:
                imgs = [resize_crop(v[view], ck.preprocessing.size) for v in per_view]
                with torch.no_grad():
                    p = model.predict_proba(torch.from_numpy(preprocess(imgs, ck.preprocessing))).float().numpy()
                row[f"{name} {view}"] = float(np.median(p))
        rows.append(row)
    return rows


def table(rows: list[dict], names: Sequence[str]) -> str:
    cols = [f"{n} {v}" for n in names for v in VIEWS]
    out = ["| source | label | crops | sharpness | " + " | ".join(cols) + " |",
           "|---|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        out.append(f"| {r['source']} | {'live' if r['label'] == 0 else 'attack'} | {r['n']} | {r['sharpness']:.0f} | "
                   + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help="a checkpoint to probe (repeat for several)")
    p.add_argument("--per-group", type=int, default=48, help="crops per (source, label)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    models = []
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"--model wants NAME=PATH, got {spec!r}")
        models.append((name, Path(path)))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(table(probe(args.manifest, models, args.per_group, args.seed), [n for n, _ in models]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
