"""The face crop contract of docs/architecture.md, and the quality gate measured on the same crop.

Crop: a square of side 1.5 x max(box w, box h) centred on the box centre, the side clipped to min(frame H, W),
shifted to lie inside the frame, resized to the model's input size (never hard-coded: pass
``scorer.input_size``). The training data was cut exactly this way, so the model sees the same framing in use.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# the quality gate's blur measure (variance of the Laplacian of the grey crop at models.preprocess.SHARPNESS_SIZE
# px), the one the trainer's sharpness-matched sampler uses
from models.preprocess import sharpness

from .types import FaceBox

CROP_SCALE = 1.5


def crop_square(box: FaceBox, frame_w: int, frame_h: int) -> tuple[int, int, int]:
    """Integer square (x0, y0, side) of the crop contract, fully inside a frame_w x frame_h frame."""
    side = CROP_SCALE * max(box.w, box.h)
    side = int(round(min(side, frame_w, frame_h)))
    side = max(side, 1)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    x0 = min(max(x0, 0), frame_w - side)  # shift inside the frame, keeping the side
    y0 = min(max(y0, 0), frame_h - side)
    return x0, y0, side


def crop_face(frame: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Cut the contract square out of an H x W x 3 frame and resize it to size x size (same channel order).

    Downscaling uses area interpolation (no aliasing), upscaling bilinear.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    h, w = frame.shape[:2]
    x0, y0, side = crop_square(box, w, h)
    patch = frame[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(patch, (size, size), interpolation=interp))


def cutoff_fraction(box: FaceBox, frame_w: int, frame_h: int, scale: float = CROP_SCALE) -> float:
    """Fraction of the ideal crop square (side ``scale`` x max(w, h) on the box centre) outside the frame.

    0 when the contract's square fits as is. The detector clips its boxes at the frame edge, so the box alone
    hides a face half out of view; the square shows how much of the framing the model was trained on is missing
    (a face at the edge, or one too close to the camera).
    """
    side = scale * max(box.w, box.h)
    if side <= 0:
        return 1.0
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0, y0 = cx - side / 2.0, cy - side / 2.0
    ix = max(0.0, min(x0 + side, frame_w) - max(x0, 0.0))
    iy = max(0.0, min(y0 + side, frame_h) - max(y0, 0.0))
    return 1.0 - (ix * iy) / (side * side)


@dataclass(frozen=True)
class Quality:
    """Quality-gate measurements of one face; ``ok`` is False when any check failed (``reasons`` says which)."""

    face_px: float
    sharpness: float
    cutoff: float
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.reasons


def assess_quality(box: FaceBox, crop: np.ndarray, frame_w: int, frame_h: int, *, min_face_px: float,
                   min_sharpness: float, max_cutoff: float) -> Quality:
    """Measure size, blur and cut-off of one face and list the checks it fails."""
    face_px = min(box.w, box.h)
    sharp = sharpness(crop)
    cut = cutoff_fraction(box, frame_w, frame_h)
    reasons = []
    if face_px < min_face_px:
        reasons.append("small")
    if sharp < min_sharpness:
        reasons.append("blurred")
    if cut > max_cutoff:
        reasons.append("cut off")
    return Quality(face_px, sharp, cut, tuple(reasons))
