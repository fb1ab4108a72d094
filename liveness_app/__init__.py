"""Real-time face liveness: ``from liveness_app import LivenessDetector`` (see liveness_app/api.py).

Importing the package is light: the detector class (and with it torch, mediapipe and OpenCV) loads on first use,
and nothing here imports Qt.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.4.0"
__all__ = ["LivenessDetector", "FaceScore", "__version__"]

if TYPE_CHECKING:
    from .api import FaceScore, LivenessDetector


def __getattr__(name: str) -> Any:
    if name in ("LivenessDetector", "FaceScore"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'liveness_app' has no attribute {name!r}")
