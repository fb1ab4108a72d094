"""Face detection: mediapipe Tasks ``FaceDetector`` (short-range BlazeFace, VIDEO mode) -> our FaceBox list.

``still_images=True`` runs mediapipe's IMAGE mode instead: each call stands alone (photo scoring).

VIDEO mode requires strictly increasing millisecond timestamps; the wrapper derives them from the frame time
and bumps any that would not increase (a looped or restarted source), so callers pass seconds and never think
about it. The detector holds native resources: close it (or use ``with``).

Lifetime (why ``_OPEN`` exists): mediapipe's ctypes binding runs every C call of a detector, ``close`` included,
on that detector's own ``ThreadPoolExecutor`` thread, and its ``__del__`` closes through that executor. When a
never-closed detector ends up in a reference cycle, the cyclic GC clears the executor's weak reference (its
worker thread then exits) before it runs ``__del__``, so the close is queued to a thread that is gone and the
thread that happened to collect garbage (a worker QThread, a reader thread, the main thread) waits forever,
inside the collector, with every other thread's garbage collection stopped behind it. Every mediapipe
detector made here is therefore held in ``_OPEN`` until it is closed: it never becomes cyclic garbage, and a
wrapper that is dropped without ``close()`` is closed by its own ``__del__`` through a live executor (with a
warning: it is a bug in the caller).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import DEFAULT_DETECTOR
from .quiet import native_stderr_filtered
from .types import FaceBox

log = logging.getLogger(__name__)
# LiteRT logs "W0000 ... Input tensor memory is not aligned ..." once per process, on one of the first inferences
# (not always the first): the first frames of a detector run with that native line filtered out of stderr
_FILTER_FRAMES = 30
_alignment_warned = False
_OPEN: dict[int, Any] = {}  # id(wrapper) -> its open mediapipe detector (see the module docstring)
_OPEN_LOCK = threading.Lock()


def _lazy_pyplot() -> None:
    """Make ``import matplotlib.pyplot`` lazy before mediapipe runs it (start-up time).

    mediapipe's vision package imports its drawing helpers, which import matplotlib.pyplot at module level
    (0.7 s of a 2-core start) although face detection never draws with it. The standard library's
    ``importlib.util.LazyLoader`` registers the module now and executes it on first attribute access, so
    code that does use pyplot (it is never the detector) still gets the real module.
    """
    import importlib.util
    import sys

    if "matplotlib.pyplot" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("matplotlib.pyplot")
    except (ImportError, ValueError):
        return
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["matplotlib.pyplot"] = module
    spec.loader.exec_module(module)


def import_mediapipe():
    """(mediapipe, BaseOptions, vision): the detector's imports, with matplotlib.pyplot made lazy first.

    Safe to call from any thread (the CLI calls it in the background while the model loads)."""
    _lazy_pyplot()
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    return mp, BaseOptions, vision


class FaceDetector:
    """Detects faces in BGR frames; ``detect(frame_bgr, t_seconds) -> list[FaceBox]`` in frame pixels."""

    def __init__(self, model_path: str | Path = DEFAULT_DETECTOR, min_confidence: float = 0.5, *,
                 still_images: bool = False):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"face detector model not found: {path} (the project ships it as "
                                    f"assets/face_detection_short_range.tflite)")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        # imported here: mediapipe is heavy and only the detector needs it
        mp, BaseOptions, vision = import_mediapipe()

        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE if still_images else vision.RunningMode.VIDEO,
            min_detection_confidence=float(min_confidence))
        self._detector: Any = None
        self._lock = threading.Lock()  # detect and close from different threads never interleave
        with native_stderr_filtered():  # LiteRT / XNNPACK print INFO lines to fd 2 when the graph is built
            detector = vision.FaceDetector.create_from_options(options)
        with _OPEN_LOCK:
            _OPEN[id(self)] = detector
        self._detector = detector
        self.still_images = still_images  # IMAGE mode: every call independent, ``t`` is ignored
        self.model_path = path
        self.min_confidence = float(min_confidence)
        self._last_ms = -1
        self._filtered_frames = 0

    def timestamp_ms(self, t: float) -> int:
        """Frame time in seconds -> the next strictly increasing millisecond timestamp."""
        ms = int(round(t * 1000.0))
        if ms <= self._last_ms:
            ms = self._last_ms + 1
        self._last_ms = ms
        return ms

    def detect(self, frame_bgr: np.ndarray, t: float = 0.0) -> list[FaceBox]:
        """Faces in a BGR H x W x 3 uint8 frame at time ``t`` (seconds), highest confidence first."""
        if self._detector is None:
            raise RuntimeError("FaceDetector is closed")
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 H x W x 3 frame, got {frame_bgr.dtype} {frame_bgr.shape}")
        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        global _alignment_warned
        with self._lock:
            detector = self._detector
            if detector is None:  # closed by another thread meanwhile
                raise RuntimeError("FaceDetector is closed")
            run = (lambda: detector.detect(image)) if self.still_images else \
                (lambda: detector.detect_for_video(image, self.timestamp_ms(t)))
            if not _alignment_warned and self._filtered_frames < _FILTER_FRAMES:
                with native_stderr_filtered() as dropped:
                    result = run()
                self._filtered_frames += 1
                _alignment_warned = any("not aligned" in line for line in dropped)
            else:
                result = run()
        boxes = []
        for d in result.detections:
            bb = d.bounding_box
            score = float(d.categories[0].score) if d.categories else 1.0
            if bb.width <= 0 or bb.height <= 0:
                continue
            boxes.append(FaceBox(float(bb.origin_x), float(bb.origin_y), float(bb.width), float(bb.height),
                                 score))
        boxes.sort(key=lambda b: -b.score)
        return boxes

    def close(self) -> None:
        """Release the native detector (idempotent, any thread)."""
        with self._lock:
            detector, self._detector = self._detector, None
            if detector is None:
                return
            try:
                with native_stderr_filtered():  # "DestroyAccelerator" INFO line
                    detector.close()
            finally:
                with _OPEN_LOCK:
                    _OPEN.pop(id(self), None)

    def __del__(self) -> None:
        if getattr(self, "_detector", None) is not None:  # a caller forgot close(): still release it, safely
            try:
                log.warning("a FaceDetector was garbage-collected without close(); closing it now")
                self.close()
            except Exception:  # interpreter shutdown: modules half torn down, mediapipe no longer calls C
                pass

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
