"""La-SoftMoE CLIP for unified physical-digital face attack detection (pure PyTorch).

Public API: ``create_model``, ``load_pretrained_clip``, ``tokenize``, ``save_checkpoint``,
``load_checkpoint``, ``LivenessScorer`` (model.scorer()), ``preprocess``. Sizes and FLOPs per crop:
``python -m models.info NAME_OR_CHECKPOINT``.
"""
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model, save_checkpoint
from .clip import LaSoftMoECLIP, LivenessScorer, create_model
from .config import ModelConfig, get_config, list_configs
from .preprocess import Preprocessing, preprocess
from .pretrained import load_pretrained_clip
from .tokenizer import tokenize

__all__ = [
    "Checkpoint", "CheckpointError", "LaSoftMoECLIP", "LivenessScorer", "ModelConfig", "Preprocessing",
    "create_model", "get_config", "list_configs", "load_checkpoint", "load_model", "load_pretrained_clip",
    "preprocess", "save_checkpoint", "tokenize",
]
