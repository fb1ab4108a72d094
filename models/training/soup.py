"""Weight averaging of fine-tunes that share one initialisation ("model soups", Wortsman et al., ICML 2022;
WiSE-FT, Wortsman et al., CVPR 2022, is the two-ingredient case of a fine-tune and its starting point).

    python -m models.soup runs/v5a/last.safetensors runs/v6s/last.safetensors --out runs/soup/ab.safetensors
    python -m models.soup assets/liveness_default.safetensors runs/v5a/last.safetensors --weights 1 1 \\
        --threshold 0.77 --out runs/soup/wise.safetensors

Fine-tunes of one checkpoint stay in one basin of the loss, so the element-wise mean of their weights is a
model of the same architecture whose errors tend to be those the ingredients agree on; the papers report the
largest gains out of distribution. The result is an ordinary checkpoint (same config, every backend, loaded
strictly); its data card lists each ingredient with its weight and ``weights_sha256``. Ingredients must have
the same config and identical non-float tensors; anything else is refused, because averaging weights of
different architectures or initialisations gives a broken model, not a soup. The threshold must be chosen
again on validation data (``python -m models.evaluate`` reports ``eer_threshold``); until then the soup stores
the weighted mean of the ingredients' thresholds.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import torch

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_metadata, save_checkpoint

log = logging.getLogger(__name__)


def average(checkpoints: Sequence[Checkpoint], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The weighted element-wise mean of the checkpoints' state dicts (float64 accumulation, float32 result).

    Raises CheckpointError when the configs differ or a non-float tensor (an index, a count) differs."""
    if not checkpoints:
        raise ValueError("a soup needs at least one checkpoint")
    weights = [1.0] * len(checkpoints) if weights is None else [float(w) for w in weights]
    if len(weights) != len(checkpoints):
        raise ValueError(f"{len(weights)} weights for {len(checkpoints)} checkpoints")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    first = checkpoints[0]
    for c in checkpoints[1:]:
        if c.config != first.config:
            raise CheckpointError(f"{c.path}: config {c.config.name!r} differs from {first.path}'s "
                                  f"{first.config.name!r}: only fine-tunes of one architecture can be averaged")
    total = sum(weights)
    states = [c.model.state_dict() for c in checkpoints]
    out = {}
    for name, ref in states[0].items():
        if not ref.is_floating_point():
            for c, s in zip(checkpoints[1:], states[1:]):
                if not torch.equal(s[name], ref):
                    raise CheckpointError(f"{c.path}: non-float tensor {name!r} differs from {first.path}'s")
            out[name] = ref.clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for w, s in zip(weights, states):
            acc += (w / total) * s[name].double()
        out[name] = acc.to(ref.dtype)
    return out


def make_soup(paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None,
              threshold: float | None = None, fp16: bool = False) -> Path:
    """Average the checkpoints at ``paths`` into a new checkpoint at ``out``."""
    checkpoints = [load_checkpoint(p) for p in paths]
    weights = [1.0] * len(paths) if weights is None else list(weights)
    state = average(checkpoints, weights)
    model = checkpoints[0].model
    model.load_state_dict(state)
    total = sum(weights)
    if threshold is None:
        threshold = sum(w * c.threshold for w, c in zip(weights, checkpoints)) / total
        log.warning("threshold %.4f is the ingredients' weighted mean: choose it again on validation data", threshold)
    card = {k: v for k, v in checkpoints[0].data_card.items() if k not in ("epoch", "val_metrics")}
    card["soup"] = [{"file": str(p), "weight": w / total, "weights_sha256": read_metadata(p).get("weights_sha256", "")}
                    for p, w in zip(paths, weights)]
    return save_checkpoint(out, model, threshold=threshold, data_card=card,
                           dtype=torch.float16 if fp16 else None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.soup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help="fine-tunes of one initialisation (.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="where to write the averaged checkpoint")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per checkpoint (default: uniform)")
    p.add_argument("--threshold", type=float, help="decision threshold to store (default: the weighted mean of "
                                                   "the ingredients'; choose it on validation data)")
    p.add_argument("--fp16-weights", action="store_true", help="store float tensors in float16 (half the size)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if a.weights is not None and len(a.weights) != len(a.checkpoints):
        p.error(f"--weights has {len(a.weights)} values for {len(a.checkpoints)} checkpoints")
    if a.threshold is not None and not 0.0 <= a.threshold <= 1.0:
        p.error(f"--threshold must be in [0, 1], got {a.threshold}")
    try:
        path = make_soup(a.checkpoints, a.out, a.weights, a.threshold, a.fp16_weights)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        p.exit(2, f"error: {e}\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
