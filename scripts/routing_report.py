"""How the MoE branches route, by attack type: per-expert combine shares per MoE layer, their spread, and how
far each attack type's routing is from the live crops' (a Markdown table for the model card).

    python scripts/routing_report.py --model assets/liveness_default.safetensors \
        --manifest runs/final/val_manifest.csv --per-type 200 > runs/eval/routing.md

Shares are ``LaSoftMoECLIP.expert_weights``: each expert's share of the combine weights, averaged over tokens
(rows sum to 1). "token top-1 %" is the share of tokens whose largest combine weight falls in that expert's slots:
whether individual tokens pick an expert even when the averages look alike.
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from models.training import data as fdata  # noqa: E402
from models.training.augment import EvalTransform  # noqa: E402


def routing_stats(model: models.LaSoftMoECLIP, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(shares b x layers x experts, token top-1 expert fractions b x layers x experts) for one batch."""
    tops = []
    hooks = []
    for block in model.visual.transformer.resblocks:
        if block.moe is None:
            continue

        def hook(mod, args, _out, store=tops):
            _, combine = mod.routing(args[0])  # b m s
            b, m, _ = combine.shape
            top = combine.argmax(-1) // mod.slots_per_expert  # b m: expert of the largest combine weight
            store.append(torch.nn.functional.one_hot(top, mod.num_experts).float().mean(1))  # b n

        hooks.append(block.moe.register_forward_hook(hook))
    try:
        with torch.no_grad():
            shares = model.expert_weights(x).float().numpy()
    finally:
        for h in hooks:
            h.remove()
    return shares, torch.stack(tops, 1).numpy() if tops else np.zeros_like(shares)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--per-type", type=int, default=200, help="crops per attack type (and of live)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import cv2

    ck = models.load_checkpoint(a.model)
    model = ck.model.eval()
    if not any(b.moe is not None for b in model.visual.transformer.resblocks):
        print(f"{a.model.name}: dense model, no routing")
        return 0
    by_type: dict[str, list] = defaultdict(list)
    for s in fdata.read_manifest(a.manifest):
        by_type[s.attack_type].append(s)
    rng = random.Random(a.seed)
    prep = EvalTransform(ck.preprocessing.size)
    mean = np.asarray(ck.preprocessing.mean, np.float32) * 255
    std = np.asarray(ck.preprocessing.std, np.float32) * 255
    res = {}
    for t, rows in sorted(by_type.items()):
        rows = rng.sample(rows, min(a.per_type, len(rows)))
        imgs = [prep(cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB)) for s in rows]
        x = torch.from_numpy(((np.stack(imgs).astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy())
        res[t] = routing_stats(model, x)
    layers = [i for i, b in enumerate(model.visual.transformer.resblocks) if b.moe is not None]
    n = model.visual.transformer.resblocks[layers[0]].moe.num_experts
    print(f"Routing of `{a.model.name}` on {a.manifest} ({a.per_type} crops per type at most):\n")
    print("| type | crops | layer | expert shares (mean +- sd over crops) | token top-1 % per expert | "
          "L1 to live |")
    print("|---|---|---|---|---|---|")
    live = res.get("none")
    for t, (shares, tops) in res.items():
        for j, layer in enumerate(layers):
            mu, sd = shares[:, j].mean(0), shares[:, j].std(0)
            top = 100 * tops[:, j].mean(0)
            l1 = "-" if live is None or t == "none" else f"{np.abs(mu - live[0][:, j].mean(0)).sum():.4f}"
            print(f"| {t} | {len(shares)} | {layer} | " + " ".join(f"{m:.3f}+-{s:.3f}" for m, s in zip(mu, sd))
                  + " | " + " ".join(f"{v:.0f}" for v in top) + f" | {l1} |")
    print(f"\n{n} experts per layer; uniform share = {1 / n:.3f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
