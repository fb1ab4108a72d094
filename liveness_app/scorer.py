"""Batched face scoring: uint8 RGB crops -> P(attack), behind one interface (``types.Scorer``) whatever the backend.

``create_scorer(model, backend)`` loads the weights and builds a ``models.deploy.runtime`` backend (tensorrt | cuda |
cpu | auto, see models/deploy/runtime.py); ``RuntimeScorer.score`` turns crops into the normalised batch with
``models.preprocess`` (the one preprocessing that training and evaluation use too) and runs it in one call.
``expert_weights`` runs the fp32 torch model, which is the only one that exposes the MoE routing. A RuntimeScorer may be shared between threads.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import models
from models.deploy.runtime import Runtime, TorchRuntime, create_runtime

from .ops.assets import ASSETS_DIR, verify_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = ASSETS_DIR / "liveness_default.safetensors"


class RuntimeScorer:
    """The app's ``types.Scorer``: a checkpoint on a ``models.deploy.runtime`` backend; ``score(crops)`` -> float32
    P(attack) per crop in one batched call."""

    def __init__(self, checkpoint: models.Checkpoint, runtime: Runtime | None = None):
        self.checkpoint = checkpoint
        self.preprocessing = checkpoint.preprocessing
        self.input_size = checkpoint.preprocessing.size
        self.threshold = checkpoint.threshold
        self.model_path = checkpoint.path
        self.runtime = runtime if runtime is not None else TorchRuntime(checkpoint.model.scorer().eval())
        if self.runtime.input_size != self.input_size:
            raise ValueError(f"runtime input {self.runtime.input_size} px != checkpoint's {self.input_size} px")
        self._torch_lock = threading.Lock()

    @property
    def backend_name(self) -> str:
        """The runtime in use, e.g. "openvino-cpu", "cuda-fp16", "tensorrt-fp16" (shown in the UI)."""
        return self.runtime.name

    @property
    def notice(self) -> str:
        """Why the backend differs from the one asked for (or which one ``auto`` chose); "" otherwise."""
        return self.runtime.notice

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB crops -> the normalised float32 batch b 3 S S the runtime takes."""
        return models.preprocess(crops, self.preprocessing)

    def score(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(attack) per crop, float32, in one runtime call (split into batches of at most 16 inside)."""
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.runtime(self.preprocess(crops))

    def expert_weights(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """MoE routing share per expert: crops x moe_layers x experts (empty for a dense model)."""
        x = torch.from_numpy(self.preprocess(crops))
        with self._torch_lock, torch.inference_mode():
            return self.checkpoint.model.expert_weights(x).float().numpy()


def load_weights(model: "str | Path | models.Checkpoint | None") -> models.Checkpoint:
    """A Checkpoint from a file, a config name (fresh weights, for development only) or the bundled model.

    Raises FileNotFoundError (naming the path) for a missing file, models.CheckpointError for a bad one and
    assets.AssetError for a bundled file whose SHA-256 differs from ``assets/SHA256SUMS``.
    """
    if isinstance(model, models.Checkpoint):
        return model
    if model is None or str(model) == "":
        if not DEFAULT_MODEL.is_file():
            raise FileNotFoundError(f"bundled model not found: {DEFAULT_MODEL}; pass --model "
                                    "with a .safetensors checkpoint")
        verify_file(DEFAULT_MODEL)  # AssetError (a ValueError) when it differs from assets/SHA256SUMS
        return models.load_checkpoint(DEFAULT_MODEL)
    path = Path(model)
    if not path.is_file() and isinstance(model, str) and model in models.list_configs():
        log.warning("model %r is a config name: fresh, untrained weights (for development and benchmarks only)",
                    model)
        return models.load_model(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    verify_file(path)  # a file inside assets/ must match its recorded SHA-256
    return models.load_checkpoint(path)


def create_scorer(model: "str | Path | models.Checkpoint | None" = None, backend: str = "auto",
                  **runtime_options) -> RuntimeScorer:
    """Load a checkpoint (default: the bundled model) and build the backend (see models.deploy.runtime).

    ``backend`` is auto | tensorrt | cuda | cpu (or openvino | onnxruntime | torch); a fallback is logged and
    reported in ``RuntimeScorer.notice``. Raises FileNotFoundError / models.CheckpointError with a message fit for
    the user, ValueError for an unknown backend.
    """
    ckpt = load_weights(model)
    runtime = create_runtime(ckpt, backend, **runtime_options)
    scorer = RuntimeScorer(ckpt, runtime)
    log.info("scorer %s on %s, input %d px, threshold %.3f", scorer.backend_name, runtime.device,
             scorer.input_size, scorer.threshold)
    return scorer
