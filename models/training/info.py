"""Model size and cost: ``python -m models.info NAME_OR_CHECKPOINT [--json]``.

Reports parameter counts (total, image tower, MoE branches, text tower), the input size, tokens and slots,
and the FLOPs per crop of the deployable image tower (``LivenessScorer``: image tower + cosine against the two
baked prompt features). FLOPs are counted analytically from the config as 2 x multiply-adds of the matrix
products (patch convolution, linear layers, attention scores and values, the Soft MoE routing, dispatch,
experts and combine); element-wise work (LayerNorm, softmax, activations, normalisation) and bias additions
are left out, the same convention as ``torch.utils.flop_counter.FlopCounterMode`` (a test checks the two
agree exactly). For a checkpoint it also shows the decision threshold, the prompts and a data-card summary.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from torch import nn

from ..checkpoint import Checkpoint, load_model
from ..config import ModelConfig


def image_flops(cfg: ModelConfig) -> dict[str, int]:
    """FLOPs (2 x multiply-adds) of one crop through the deployable image tower, by part, plus ``total``.

    Parts: ``patch_embed`` (the stride-P convolution, or the convolutional stem with its projection), ``attention`` (qkv, scores q k^T, weights x v, output
    projection, all blocks), ``mlp`` (the block MLPs), ``moe`` (router logits, dispatch, experts, combine and
    reading A's linear-attention product and optional query map, in the MoE blocks), ``head`` (``ln_post @
    proj`` and the cosine against the two prompt features).
    """
    v, moe = cfg.vision, cfg.moe
    g = v.image_size // v.patch_size
    m, d = v.num_tokens, v.width  # tokens (patches + CLS), width
    hidden = int(d * v.mlp_ratio)
    macs: dict[str, int] = {}
    if v.stem == "patch":
        macs["patch_embed"] = g * g * (3 * v.patch_size * v.patch_size) * d
    else:  # convolutional stem in place of the patch embedding (models/stem.py)
        from ..stem import stem_macs

        macs["patch_embed"] = stem_macs(v.image_size, d)
    # per block: qkv (m d 3d), scores (m m d over all heads), weights x values (m m d), out_proj (m d d)
    macs["attention"] = v.layers * (m * d * 3 * d + 2 * m * m * d + m * d * d)
    macs["mlp"] = v.layers * 2 * m * d * hidden
    s = cfg.slots_per_expert() * moe.num_experts  # slots per MoE layer
    expert_hidden = int(d * (moe.expert_ratio if moe.expert_ratio is not None else v.mlp_ratio))
    per_moe = m * d * s  # router logits: l2norm(X) @ l2norm(Phi), m x d x s
    per_moe += s * m * d  # dispatch: D^T X
    per_moe += 2 * s * d * expert_hidden  # every slot through its expert's two layers
    per_moe += m * s * d  # combine: C @ Y_slots
    if moe.weighting == "la-a":
        per_moe += m * d * s  # phi(q) @ phi(k)
        if moe.la_query_proj:
            per_moe += m * d * d  # learnable linear map of the queries
    macs["moe"] = len(moe.layers) * per_moe
    macs["head"] = d * cfg.embed_dim + cfg.embed_dim * 2
    flops = {k: 2 * val for k, val in macs.items()}
    flops["total"] = sum(flops.values())
    return flops


def _count(params) -> int:
    return sum(p.numel() for p in params)


def describe(ckpt: Checkpoint) -> dict[str, Any]:
    """Sizes and cost of a loaded model or checkpoint as a JSON-ready dict (see the module docstring)."""
    model, cfg = ckpt.model, ckpt.config
    moe_modules: list[nn.Module] = [b.moe for b in model.visual.transformer.resblocks if b.moe is not None]
    visual = _count(model.visual.parameters())
    moe = _count(p for mod in moe_modules for p in mod.parameters())
    total = _count(model.parameters())
    text = total - visual - model.logit_scale.numel()
    flops = image_flops(cfg)
    info: dict[str, Any] = {
        "name": cfg.name,
        "source": str(ckpt.path) if ckpt.path is not None else f"config {cfg.name!r} (fresh weights)",
        "params": {"total": total, "image_tower": visual, "moe": moe, "image_tower_dense": visual - moe,
                   "text_tower": text},
        "input_size": cfg.vision.image_size,
        "patch_size": cfg.vision.patch_size,
        "tokens": cfg.vision.num_tokens,
        "moe": {"layers": list(cfg.moe.layers), "experts": cfg.moe.num_experts,
                "slots_per_expert": cfg.slots_per_expert() if cfg.moe.layers else 0,
                "slots": cfg.slots_per_expert() * cfg.moe.num_experts if cfg.moe.layers else 0,
                "weighting": cfg.moe.weighting if cfg.moe.layers else None},
        "flops_per_crop": flops,
        "preprocessing": {"size": ckpt.preprocessing.size, "mean": list(ckpt.preprocessing.mean),
                          "std": list(ckpt.preprocessing.std)},
        "prompts": list(ckpt.prompts),
    }
    if ckpt.path is not None:
        info["threshold"] = ckpt.threshold
        info["data_card"] = ckpt.data_card
    return info


def _summary(value: Any, width: int = 100) -> str:
    """One line for a data-card value: scalars as they are, objects by their keys, long text cut."""
    if isinstance(value, dict):
        text = "{" + ", ".join(str(k) for k in value) + "}"
    else:
        text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(info: dict[str, Any]) -> str:
    """The human-readable report printed by the CLI."""
    p, f, moe = info["params"], info["flops_per_crop"], info["moe"]
    lines = [
        f"model        {info['name']}  ({info['source']})",
        f"input        {info['input_size']} px, patch {info['patch_size']}, {info['tokens']} tokens",
        f"params       total {p['total']:,} ({p['total'] / 1e6:.2f} M)",
        f"             image tower {p['image_tower']:,} (dense part {p['image_tower_dense']:,}, "
        f"MoE {p['moe']:,})",
        f"             text tower {p['text_tower']:,} (runs once, at load time)",
    ]
    if moe["layers"]:
        lines.append(f"MoE          {moe['weighting']} in blocks {moe['layers']}: {moe['experts']} experts x "
                     f"{moe['slots_per_expert']} slots = {moe['slots']} slots")
    else:
        lines.append("MoE          none (dense CLIP)")
    parts = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in f.items() if k != "total")
    lines.append(f"FLOPs/crop   {f['total'] / 1e9:.3f} G (image tower; {parts})")
    lines.append(f"prompts      {info['prompts']}")
    if "threshold" in info:
        lines.append(f"threshold    {info['threshold']:.4f}")
        card = info.get("data_card") or {}
        if not card:
            lines.append("data card    (empty)")
        for i, (k, val) in enumerate(card.items()):
            lines.append(f"{'data card' if i == 0 else '':<12} {k}: {_summary(val)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.info", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a config name (models/model_configs/NAME.json) or a .safetensors checkpoint")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        ckpt = load_model(args.model)
    except (FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        print(f"models.info: {e}", file=sys.stderr)
        return 2
    info = describe(ckpt)
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
