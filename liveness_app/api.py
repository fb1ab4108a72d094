"""The Python API: ``LivenessDetector`` scores photos (``score_image``) and videos / cameras (``stream``).

    from liveness_app import LivenessDetector

    with LivenessDetector() as det:                    # the bundled model, the fastest backend that runs
        for face in det.score_image("photo.jpg"):     # a path, a numpy array (BGR unless color="rgb"), a PIL image
            print(face.box, face.p_attack, face.verdict)
        for result in det.stream("clip.mp4"):         # per-frame results with tracking and temporal smoothing
            print(result.index, [(t.track_id, t.verdict) for t in result.tracks])

``score_image`` judges one picture on its own: every face found (the largest ``max_faces``), scored once,
verdict "live" or "attack" against the model's stored threshold (or ``threshold``), no tracking or smoothing.
The face crop, the quality gate and the scorer are the real-time pipeline's own (liveness_app/pipeline.py), so a
photo is judged exactly as a video frame would be. Colour order: OpenCV arrays are BGR, PIL / imageio /
matplotlib arrays are RGB; a numpy array is read as ``color="bgr"`` unless told otherwise, and any other value
of ``color`` is an error, so the order is always a stated choice.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from .config import AppConfig, load_config
from .types import FrameResult

COLORS = ("bgr", "rgb")


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded; the message names it."""


@dataclass(frozen=True)
class FaceScore:
    """One face of a scored image.

    ``box``: x, y, width, height in image pixels; ``p_attack``: the model's probability that the face is an
    attack (print, replay, mask, digital); ``verdict``: "attack" when ``p_attack >= threshold``, else "live";
    ``detector_confidence``: the face detector's score; ``quality``: the quality checks the face fails ("small",
    "blurred", "cut off"), empty when it passes them all (a failing face is still scored, but judge it with care).
    """

    box: tuple[float, float, float, float]
    p_attack: float
    verdict: str
    detector_confidence: float
    quality: tuple[str, ...] = ()

    @property
    def quality_ok(self) -> bool:
        return not self.quality

    def to_dict(self) -> dict[str, Any]:
        """The face as written by ``liveness --images`` (rounded for JSON)."""
        return {"box": [round(v, 1) for v in self.box], "p_attack": round(self.p_attack, 5),
                "verdict": self.verdict, "detector_confidence": round(self.detector_confidence, 4),
                "quality": list(self.quality)}


def load_image(image: Any, color: str | None = None) -> np.ndarray:
    """A path, numpy array or PIL image -> BGR H x W x 3 uint8 (the frame format of the pipeline).

    numpy arrays: uint8, H x W (grey), H x W x 3 or H x W x 4 (alpha dropped), channel order ``color`` ("bgr",
    the default, as OpenCV gives; "rgb" as PIL, imageio and matplotlib give). Paths and PIL images carry their
    own order: ``color`` must then be left out. Raises FileNotFoundError, ImageReadError (undecodable file),
    TypeError (unsupported type or dtype) or ValueError (bad ``color`` or shape), each naming the problem.
    """
    if color is not None and color not in COLORS:
        raise ValueError(f"color must be 'bgr' (OpenCV) or 'rgb' (PIL, imageio, matplotlib), got {color!r}")
    if isinstance(image, (str, Path)):
        if color is not None:
            raise ValueError("color applies to numpy arrays only: an image file is decoded in its own order")
        return read_image_file(image)
    if _is_pil(image):
        if color is not None:
            raise ValueError("color applies to numpy arrays only: a PIL image knows its own mode")
        return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, a numpy array or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got {image.dtype}: scale it to 0..255 and convert with "
                        ".astype(np.uint8)")
    order = color or "bgr"
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 3:
        out = image if order == "bgr" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        out = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR if order == "bgr" else cv2.COLOR_RGBA2BGR)
    else:
        raise ValueError(f"expected an image array H x W, H x W x 3 or H x W x 4, got shape {image.shape}")
    if out.shape[0] < 1 or out.shape[1] < 1:
        raise ValueError(f"empty image array, shape {image.shape}")
    return np.ascontiguousarray(out)


def read_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file to BGR uint8 (any path, also non-ASCII ones); FileNotFoundError / ImageReadError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read {path}: {e.strerror or e}") from e
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image OpenCV can read")
    return image


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "mode")


class LivenessDetector:
    """Face liveness for photos and video: ``score_image(image)`` and ``stream(source)``; close it when done.

    ``model``: a ``.safetensors`` checkpoint (None: the bundled model); ``backend``: auto | tensorrt | cuda | cpu
    (or openvino | onnxruntime | torch); ``threshold``: P(attack) at or above which a face is an attack (None: the
    model's stored threshold); ``max_faces``: faces scored per image / frame, the largest win. Any other
    setting of liveness_app/config.py (smoothing, tracking, quality gate) may be passed as a keyword and applies
    to ``stream``. Raises ValueError (config.ConfigError) naming a bad setting, FileNotFoundError for a missing
    model file.
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto", *, threshold: float | None = None,
                 max_faces: int = 4, **settings: Any):
        self._start(load_config(None, model=None if model is None else str(model), backend=backend,
                                threshold=threshold, max_faces=max_faces, **settings))

    @classmethod
    def from_config(cls, config: AppConfig) -> "LivenessDetector":
        """A detector with every setting of an AppConfig (the command line's path)."""
        self = cls.__new__(cls)
        self._start(config)
        return self

    def _start(self, config: AppConfig) -> None:
        from models.deploy.engine import disable_openvino_telemetry

        from .scorer import create_scorer

        disable_openvino_telemetry()  # nothing is sent or written under ~/intel (see models/deploy/engine.py)

        self.config = config
        self.scorer = create_scorer(config.model, backend=config.backend)
        self._lock = threading.Lock()
        self._detector: Any = None  # IMAGE-mode detector of score_image, made on first use
        self._closed = False

    @property
    def threshold(self) -> float:
        """P(attack) at or above which a face is judged an attack."""
        t = self.config.threshold
        return float(self.scorer.threshold if t is None else t)

    @property
    def backend_name(self) -> str:
        return self.scorer.backend_name

    def score_image(self, image: Any, color: str | None = None) -> list[FaceScore]:
        """Every face in one picture, largest first; an empty list when there is none.

        ``image``: a path, a numpy array (``color="bgr"`` by default, as ``cv2.imread`` gives, or ``"rgb"``) or a
        PIL image. See ``load_image`` for the errors.
        """
        frame = load_image(image, color)
        from .pipeline import crop_faces
        from .tracking import keep_largest

        with self._lock:
            self._check_open()
            if self._detector is None:
                from .detection import FaceDetector

                self._detector = FaceDetector(self.config.detector_model, self.config.detector_min_confidence,
                                              still_images=True)
            boxes, _ = keep_largest(self._detector.detect(frame), self.config.max_faces)
            boxes.sort(key=lambda b: -b.area)
            crops, qualities = crop_faces(frame, boxes, int(self.scorer.input_size), self.config)
            scores = np.asarray(self.scorer.score(crops), dtype=np.float64) if crops else np.zeros(0)
            threshold = self.threshold
        return [FaceScore(box=(b.x, b.y, b.w, b.h), p_attack=float(p),
                          verdict="attack" if p >= threshold else "live", detector_confidence=float(b.score),
                          quality=q.reasons) for b, p, q in zip(boxes, scores, qualities)]

    def stream(self, source: str | int | Path, *, loop: bool = False,
               max_frames: int | None = None) -> Iterator[FrameResult]:
        """Per-frame results of a video file, image folder, camera index or stream URL (tracking, smoothing).

        Each ``FrameResult`` has ``tracks`` (``track_id``, ``box``, ``raw_score``, ``smoothed``, ``verdict``
        "live" | "attack" | "uncertain", ``quality_ok``) and ``to_record()`` (the JSONL record). The source is
        opened when iteration starts and closed when it ends or the generator is closed. Raises
        sources.SourceError when the source cannot be opened.
        """
        from .pipeline import Pipeline
        from .sources import open_source

        self._check_open()
        spec: str | int = source if isinstance(source, int) else str(source)
        if isinstance(spec, str) and spec.strip().isdigit():
            spec = int(spec)
        config = self.config.replace(source=spec, loop=loop)
        with open_source(spec, loop=loop, folder_fps=config.folder_fps) as src, Pipeline(config, self.scorer) as pipe:
            n = 0
            while max_frames is None or n < max_frames:
                self._check_open()
                frame = src.read()
                if frame is None:
                    break
                yield pipe.process(frame.image, frame.t, frame.index)
                n += 1

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("LivenessDetector is closed")

    def close(self) -> None:
        """Release the face detector and the model (idempotent)."""
        with self._lock:
            self._closed = True
            if self._detector is not None:
                self._detector.close()
                self._detector = None
            self.scorer = None  # type: ignore[assignment]

    def __enter__(self) -> "LivenessDetector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
