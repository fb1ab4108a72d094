"""Batched face scoring: uint8 RGB crops -> P(attack), behind one interface (``types.Scorer``) whatever the backend.

``create_scorer(model, backend)`` loads the weights and builds a ``models.deploy.runtime`` backend (tensorrt | cuda |
cpu | auto, see models/deploy/runtime.py), giving it the shipped agreement crops (assets/agreement_crops.jpg) that
guard reduced-precision runtimes; ``RuntimeScorer.score`` turns crops into the normalised batch with
``models.preprocess`` (the one preprocessing that training and evaluation use too) and runs it in one call.
``score_with_routing`` returns the MoE routing statistics from that same call (every runtime exports them), so
the GUI's routing panel costs no second model pass. A RuntimeScorer may be shared between threads.

A second start takes the warm path when it can (models/deploy/warm.py): for an OpenVINO runtime recorded by an
earlier full start for exactly this checkpoint (by its digests) and request, the checkpoint's header is read, its
weights hashed, the cached model opened and its recorded guard re-confirmed, all without importing torch;
anything it cannot prove is logged with the reason and the full start (torch) runs instead.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

import models
from models.deploy.engine import Runtime, cache_root, load_agreement_crops

from .ops.assets import ASSETS_DIR, verify_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = ASSETS_DIR / "liveness_default.safetensors"
AGREEMENT_CROPS = ASSETS_DIR / "agreement_crops.jpg"  # guard of reduced-precision runtimes (models/deploy/runtime.py)


class RuntimeScorer:
    """The app's ``types.Scorer``: a checkpoint on a ``models.deploy.runtime`` backend; ``score(crops)`` -> float32
    P(attack) per crop in one batched call."""

    def __init__(self, checkpoint: "models.Checkpoint | models.CheckpointHeader", runtime: Runtime | None = None):
        self.checkpoint = checkpoint  # on a warm start the header only: no torch model was built
        self.preprocessing = checkpoint.preprocessing
        self.input_size = checkpoint.preprocessing.size
        self.threshold = checkpoint.threshold
        self.model_path = checkpoint.path
        if runtime is None:
            from models.deploy.runtime import TorchRuntime

            runtime = TorchRuntime(checkpoint.model.scorer(routing=checkpoint.model.has_moe).eval())
        self.runtime = runtime
        self.warm_start = isinstance(checkpoint, models.CheckpointHeader)  # True: reached without torch
        if self.runtime.input_size != self.input_size:
            raise ValueError(f"runtime input {self.runtime.input_size} px != checkpoint's {self.input_size} px")

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

    def score_with_routing(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(attack) per crop, expert shares crops x moe_layers x experts, token dispatch shares crops x
        moe_layers x patches x experts), all from the one runtime call that scores the crops.

        The routing arrays are empty (crops x 0 x 0 ...) for a dense model or a runtime exported without them.
        """
        if len(crops) == 0:
            return (np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0, 0), np.float32))
        return self.runtime.run_routing(self.preprocess(crops))

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
                  **runtime_options) -> RuntimeScorer:
    """Load a checkpoint (default: the bundled model) and build the backend (see models.deploy.runtime).

    ``backend`` is auto | tensorrt | cuda | cpu (or openvino | openvino-int8 | openvino-bf16 | onnxruntime |
    torch); a fallback is logged and reported in ``RuntimeScorer.notice``. A warm start (see the module
    docstring) is tried first for a checkpoint file. Raises FileNotFoundError / models.CheckpointError with a
    message fit for the user, ValueError for an unknown backend.
    """
    if "agreement_crops" not in runtime_options and AGREEMENT_CROPS.is_file():
        try:
            verify_file(AGREEMENT_CROPS)  # a bundled asset: its SHA-256 must match
            runtime_options["agreement_crops"] = load_agreement_crops(AGREEMENT_CROPS)
        except (ValueError, OSError) as e:  # without them reduced precision is simply not tried
            log.warning("agreement crops unusable (%s): reduced-precision backends are not tried", e)
    scorer = _warm_scorer(model, backend, runtime_options)
    if scorer is not None:
        return scorer
    from models.deploy.runtime import create_runtime  # imports torch

    ckpt = load_weights(model)
    runtime_options.setdefault("defer_builds", True)  # a first start does not wait for the int8 quantisation
    runtime = create_runtime(ckpt, backend, **runtime_options)
    scorer = RuntimeScorer(ckpt, runtime)
    log.info("scorer %s on %s, input %d px, threshold %.3f", scorer.backend_name, runtime.device,
             scorer.input_size, scorer.threshold)
    return scorer


# options a warm record is keyed on (defer_builds only decides when an int8 model is built, and a recorded one is)
_WARM_OPTIONS = {"agreement_crops", "cache_dir", "max_batch", "threads", "routing", "defer_builds"}


def _warm_scorer(model: "str | Path | models.Checkpoint | None", backend: str,
                 options: dict) -> RuntimeScorer | None:
    """The scorer of a warm start (models/deploy/warm.py), or None after logging why there is none."""
    from models.deploy import warm

    if model is not None and not isinstance(model, (str, Path)):
        return None  # a Checkpoint in memory: torch is loaded already, and the full start checks it
    path = DEFAULT_MODEL if model is None or str(model) == "" else Path(model)
    crops = options.get("agreement_crops")
    why = ("model is not a checkpoint file" if not path.is_file() else
           f"options {sorted(set(options) - _WARM_OPTIONS)} are not keyed" if set(options) - _WARM_OPTIONS else
           "no agreement crops" if not isinstance(crops, np.ndarray) else "")
    if not why:
        try:
            verify_file(path)  # a bundled file must match its recorded SHA-256 on this path too
            cache = Path(options["cache_dir"]) if options.get("cache_dir") else cache_root()
            header, runtime = warm.open_warm(path, backend, crops, cache,
                                             **{k: options[k] for k in ("max_batch", "threads", "routing")
                                                if k in options})
        except (warm.WarmStartRefused, ValueError, OSError) as e:  # AssetError is a ValueError
            why = str(e)
    if why:
        log.info("warm start not taken (%s); loading the model with torch", why)
        return None
    scorer = RuntimeScorer(header, runtime)
    log.info("warm start: %s from the cache, its guard re-confirmed (%s), torch not loaded; input %d px, "
             "threshold %.3f", runtime.name, runtime.agreement, scorer.input_size, scorer.threshold)
    return scorer
