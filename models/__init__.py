"""La-SoftMoE CLIP for unified physical-digital face attack detection (pure PyTorch).

Public API: ``create_model``, ``load_pretrained_clip``, ``tokenize``, ``save_checkpoint``,
``load_checkpoint``, ``read_header``, ``LivenessScorer`` (model.scorer()), ``preprocess``. Sizes and FLOPs per
crop: ``python -m models.info NAME_OR_CHECKPOINT``.

Importing the package does not import torch: the names that need it load their module on first use (PEP 562),
so a warm start (models/deploy/warm.py) reads a checkpoint's header, preprocesses and runs a cached OpenVINO
model without it. The configuration and preprocessing (numpy only) are imported at once.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import ModelConfig, get_config, list_configs
from .preprocess import Preprocessing, preprocess

if TYPE_CHECKING:
    from .checkpoint import (Checkpoint, CheckpointError, CheckpointHeader, load_checkpoint, load_model,
                             read_header, save_checkpoint)
    from .clip import LaSoftMoECLIP, LivenessScorer, create_model
    from .pretrained import load_pretrained_clip
    from .tokenizer import tokenize

_LAZY = {  # name -> the submodule that defines it
    "Checkpoint": "checkpoint", "CheckpointError": "checkpoint", "CheckpointHeader": "checkpoint",
    "load_checkpoint": "checkpoint", "load_model": "checkpoint", "read_header": "checkpoint",
    "save_checkpoint": "checkpoint", "LaSoftMoECLIP": "clip", "LivenessScorer": "clip", "create_model": "clip",
    "load_pretrained_clip": "pretrained", "tokenize": "tokenizer",
}

__all__ = sorted(["ModelConfig", "Preprocessing", "get_config", "list_configs", "preprocess", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'models' has no attribute {name!r}")
