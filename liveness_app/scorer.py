"""Batched face scoring: uint8 RGB crops -> P(attack), behind one interface whatever the backend.

``create_scorer(model, backend)`` loads the weights and builds a ``models.runtime`` backend (tensorrt | cuda |
cpu | auto, see models/runtime.py), giving it the shipped agreement crops (assets/agreement_crops.jpg) that
guard reduced-precision runtimes; ``Scorer.score`` turns crops into the normalised batch with OpenCV and
numpy (no per-crop torch calls) and runs it in one call. ``score_with_routing`` returns the MoE routing
statistics from that same call (every runtime exports them), so the GUI's routing panel costs no second
model pass. A Scorer may be shared between threads.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

import models
from models.runtime import Runtime, TorchRuntime, create_runtime, load_agreement_crops

from .assets import ASSETS_DIR, verify_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = ASSETS_DIR / "liveness_default.safetensors"
AGREEMENT_CROPS = ASSETS_DIR / "agreement_crops.jpg"  # guard of reduced-precision runtimes (models/runtime.py)


class CropPreprocessor:
    """uint8 RGB crops (H W 3) -> float32 b 3 S S, (x / 255 - mean) / std, as one vectorised numpy pass.

    Crops already at S x S (the cropper's contract) are only stacked; others are resized with OpenCV
    (area averaging when shrinking, bilinear when enlarging).
    """

    def __init__(self, preprocessing: models.Preprocessing):
        self.size = int(preprocessing.size)
        std = np.asarray(preprocessing.std, dtype=np.float32)
        mean = np.asarray(preprocessing.mean, dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)  # 3: x * scale + offset == (x/255 - mean)/std
        self._offset = (-mean / std).astype(np.float32)

    def __call__(self, crops: "Sequence[np.ndarray] | np.ndarray") -> np.ndarray:
        s = self.size
        if isinstance(crops, np.ndarray) and crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, 3, s, s), dtype=np.float32)
        batch = np.empty((len(crops), s, s, 3), dtype=np.uint8)  # b S S 3
        for i, c in enumerate(crops):
            c = np.asarray(c)
            if c.ndim != 3 or c.shape[2] != 3 or c.dtype != np.uint8 or c.shape[0] < 1 or c.shape[1] < 1:
                raise ValueError(f"crop {i}: expected a uint8 RGB image H x W x 3, got {c.dtype} {c.shape}")
            if c.shape[:2] != (s, s):
                shrink = c.shape[0] > s or c.shape[1] > s
                c = cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            batch[i] = c
        x = batch.astype(np.float32)
        x *= self._scale
        x += self._offset
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # b S S 3 -> b 3 S S


class Scorer:
    """Scores face crops in one batched call. ``score(crops)`` -> float32 P(attack) per crop."""

    def __init__(self, checkpoint: models.Checkpoint, runtime: Runtime | None = None):
        self.checkpoint = checkpoint
        self.preprocessing = checkpoint.preprocessing
        self.input_size = checkpoint.preprocessing.size
        self.threshold = checkpoint.threshold
        self.model_path = checkpoint.path
        if runtime is None:
            runtime = TorchRuntime(checkpoint.model.scorer(routing=checkpoint.model.has_moe).eval())
        self.runtime = runtime
        if self.runtime.input_size != self.input_size:
            raise ValueError(f"runtime input {self.runtime.input_size} px != checkpoint's {self.input_size} px")
        self._prep = CropPreprocessor(checkpoint.preprocessing)

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
        return self._prep(crops)

    def score(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(attack) per crop, float32, in one runtime call (split into batches of at most 16 inside)."""
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.runtime(self._prep(crops))

    def score_with_routing(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(attack) per crop, expert shares crops x moe_layers x experts, token dispatch shares crops x
        moe_layers x patches x experts), all from the one runtime call that scores the crops.

        The routing arrays are empty (crops x 0 x 0 ...) for a dense model or a runtime exported without them.
        """
        if len(crops) == 0:
            return (np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0, 0), np.float32))
        return self.runtime.run_routing(self._prep(crops))

    def expert_weights(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """MoE routing share per expert: crops x moe_layers x experts (empty for a dense model).

        Read from the runtime's routing outputs (one model call, no second eager pass); a caller that also
        needs the scores uses ``score_with_routing`` instead."""
        return self.score_with_routing(crops)[1]


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
                  **runtime_options) -> Scorer:
    """Load a checkpoint (default: the bundled model) and build the backend (see models.runtime).

    ``backend`` is auto | tensorrt | cuda | cpu (or openvino | openvino-int8 | openvino-bf16 | onnxruntime |
    torch); a fallback is logged and
    reported in ``Scorer.notice``. Raises FileNotFoundError / models.CheckpointError with a message fit for
    the user, ValueError for an unknown backend.
    """
    ckpt = load_weights(model)
    if "agreement_crops" not in runtime_options and AGREEMENT_CROPS.is_file():
        try:
            verify_file(AGREEMENT_CROPS)  # a bundled asset: its SHA-256 must match
            runtime_options["agreement_crops"] = load_agreement_crops(AGREEMENT_CROPS)
        except (ValueError, OSError) as e:  # without them reduced precision is simply not tried
            log.warning("agreement crops unusable (%s): reduced-precision backends are not tried", e)
    runtime_options.setdefault("defer_builds", True)  # a first start does not wait for the int8 quantisation
    runtime = create_runtime(ckpt, backend, **runtime_options)
    scorer = Scorer(ckpt, runtime)
    log.info("scorer %s on %s, input %d px, threshold %.3f", scorer.backend_name, runtime.device,
             scorer.input_size, scorer.threshold)
    return scorer
