"""Face crops (uint8 RGB) -> the model's normalised input batch: the one preprocessing of the app, evaluation and
training, with the parameters stored in the checkpoint.

One resize rule (``resize_crop``: OpenCV area averaging when shrinking, bilinear when enlarging), one colour order
(RGB; a BGR frame or file is converted before it gets here) and one normalisation (``(x / 255 - mean) / std``,
computed as ``x * scale + offset`` in float32). OpenCV is imported only when a crop needs resizing, so the model
library imports without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import ModelConfig


@dataclass(frozen=True)
class Preprocessing:
    """How a face crop becomes a model input: resize to ``size``, RGB in [0, 1], (x - mean) / std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "Preprocessing":
        return cls(cfg.vision.image_size, tuple(cfg.mean), tuple(cfg.std))


def check_crop(image: np.ndarray, what: str = "crop") -> np.ndarray:
    """``image`` if it is a non-empty uint8 H x W x 3 array, else ValueError naming ``what`` and what it got."""
    if (not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8
            or image.shape[0] < 1 or image.shape[1] < 1):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what}: expected a uint8 RGB image H x W x 3, got {got}")
    return image


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize of a uint8 crop to ``size`` px (area when shrinking, bilinear when enlarging); a crop already
    at ``size`` is returned as is (not copied)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    import cv2  # OpenCV core only, and only when a crop is not at the model's size

    interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


SHARPNESS_SIZE = 128  # crops are compared for blur at one fixed size, whatever their size or the model's


def sharpness(image: np.ndarray, size: int = SHARPNESS_SIZE) -> float:
    """Variance of the Laplacian of the grey image (RGB or grey) resized to ``size`` px by ``resize_crop``: higher
    is sharper. One measure for the app's quality gate, the trainer's sharpness-matched sampler and
    ``scripts/sharpness_probe.py``."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(resize_crop(grey, size), cv2.CV_64F).var())


def preprocess(crops: "np.ndarray | Sequence[np.ndarray]", preprocessing: Preprocessing) -> np.ndarray:
    """uint8 RGB crops (b S S 3 array, one H W 3 array or a list of H W 3) -> float32 b 3 size size, C-contiguous,
    ``(x / 255 - mean) / std``. Crops of another size go through ``resize_crop``; a bad crop raises ValueError
    naming its index."""
    s = int(preprocessing.size)
    if isinstance(crops, np.ndarray) and crops.ndim == 3:
        crops = crops[None]
    if len(crops) == 0:
        return np.zeros((0, 3, s, s), dtype=np.float32)
    batch = np.empty((len(crops), s, s, 3), dtype=np.uint8)  # b S S 3
    for i, c in enumerate(crops):
        batch[i] = resize_crop(check_crop(np.asarray(c), f"crop {i}"), s)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    x = batch.astype(np.float32)
    x *= (1.0 / (255.0 * std)).astype(np.float32)  # x * scale + offset == (x / 255 - mean) / std
    x += (-mean / std).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # b S S 3 -> b 3 S S
