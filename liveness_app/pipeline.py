"""One frame in, one FrameResult out: detect -> track -> crop -> score (one batch) -> smooth.

``Pipeline`` owns the detector, the tracker and one smoother per track; the scorer is passed in (a
``types.Scorer``, any backend).
It does no capture and no painting, so the GUI worker and the headless CLI drive the same object (through
``session.Session``).
``update_settings`` may be called from another thread (a UI slider): changes apply from the next frame, and
threshold / smoothing changes re-decide current verdicts at once.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from .config import AppConfig
from .crop import Quality, assess_quality, crop_face
from .detection import FaceDetector
from .smoothing import SmoothingParams, TrackSmoother
from .tracking import IoUTracker, keep_largest
from .types import FaceBox, FrameResult, Scorer, TrackResult

log = logging.getLogger(__name__)

_DETECTOR_KEYS = ("detector_model", "detector_min_confidence")


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Any frame a source may yield -> BGR H x W x 3 uint8: grey (H W or H W 1) and BGRA are converted,
    16-bit and float images are scaled to 8 bit. Raises ValueError naming the shape/dtype when it is no image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating):  # assume [0, 1] as OpenCV does for float images
            image = np.clip(np.nan_to_num(image) * 255.0, 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"unsupported frame dtype {image.dtype} (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an image frame H x W (x 1, 3 or 4), got shape {image.shape}")
    return image


def crop_faces(frame_bgr: np.ndarray, boxes: list[FaceBox], size: int,
               config: AppConfig) -> tuple[list[np.ndarray], list[Quality]]:
    """The model's RGB crops (docs/architecture.md crop contract, ``size`` px) of ``boxes`` in a BGR frame, and their quality.

    The one place where a frame's colour order is turned into the model's: crop in BGR (cheap), convert only
    the small crop to RGB. The real-time pipeline and single-image scoring (liveness_app/api.py) both use it.
    """
    h, w = frame_bgr.shape[:2]
    crops: list[np.ndarray] = []
    qualities: list[Quality] = []
    for box in boxes:
        crop = cv2.cvtColor(crop_face(frame_bgr, box, size), cv2.COLOR_BGR2RGB)
        crops.append(crop)
        qualities.append(assess_quality(box, crop, w, h, min_face_px=config.min_face_px,
                                        min_sharpness=config.min_sharpness, max_cutoff=config.max_cutoff))
    return crops, qualities


class Pipeline:
    """The real-time engine between a frame and a verdict (see the module docstring)."""

    def __init__(self, config: AppConfig, scorer: Scorer, detector: FaceDetector | None = None):
        self.config = config
        self.scorer = scorer
        self.input_size = int(scorer.input_size)
        self._lock = threading.RLock()
        self.detector = detector or FaceDetector(config.detector_model, config.detector_min_confidence)
        self.tracker = IoUTracker(config.track_iou_min, config.track_max_missed, config.track_confirm_hits,
                                  config.track_confirm_window)
        self.params = self._smoothing_params(config)
        self.smoothers: dict[int, TrackSmoother] = {}
        self.last_crops: dict[int, np.ndarray] = {}  # track id -> RGB crop of the latest frame (for the audit log)
        self.last_quality: dict[int, Quality] = {}
        self.ended_tracks: list[int] = []  # ids that ended during the latest process() call

    def _smoothing_params(self, c: AppConfig) -> SmoothingParams:
        threshold = c.threshold if c.threshold is not None else float(self.scorer.threshold)
        return SmoothingParams(threshold=threshold, hysteresis=c.hysteresis, ema_tau_s=c.ema_tau_s,
                               min_evidence_frames=c.min_evidence_frames, min_evidence_s=c.min_evidence_s)

    def process(self, frame_bgr: np.ndarray, t: float, index: int) -> FrameResult:
        """Run every stage on one BGR frame taken at ``t`` seconds; ``timings_ms`` has each stage's cost."""
        with self._lock:
            return self._process(frame_bgr, t, index)

    def _process(self, frame_bgr: np.ndarray, t: float, index: int) -> FrameResult:
        c = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        frame_bgr = as_bgr(frame_bgr)
        boxes = self.detector.detect(frame_bgr, t)
        t1 = time.perf_counter()
        timings["detect"] = (t1 - t0) * 1e3

        kept, dropped = keep_largest(boxes, c.max_faces)
        before = list(self.smoothers)
        tracks = sorted(self.tracker.update(kept), key=lambda tr: tr.track_id)  # stable order in records
        self.ended_tracks = self.tracker.ended(before)
        for tid in self.ended_tracks:
            self.smoothers.pop(tid, None)
        t2 = time.perf_counter()
        timings["track"] = (t2 - t1) * 1e3

        crops, qualities = crop_faces(frame_bgr, [tr.box for tr in tracks], self.input_size, c)
        t3 = time.perf_counter()
        timings["crop"] = (t3 - t2) * 1e3

        experts = tokens = None
        if not crops:
            scores = np.zeros(0, np.float32)
        elif c.expert_weights:
            # scores and routing from one model call (the runtime exports the routing outputs)
            scores, experts, tokens = self.scorer.score_with_routing(crops)
            experts = np.asarray(experts, dtype=np.float32)  # faces x layers x experts
            tokens = np.asarray(tokens, dtype=np.float32)  # faces x layers x patches x experts
        else:
            scores = self.scorer.score(crops)
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(crops),):
            raise RuntimeError(f"scorer returned {scores.shape} scores for {len(crops)} crops")
        t4 = time.perf_counter()
        timings["score"] = (t4 - t3) * 1e3

        results = []
        for i, tr in enumerate(tracks):
            smoother = self.smoothers.get(tr.track_id)
            if smoother is None:
                smoother = self.smoothers[tr.track_id] = TrackSmoother(self.params)
            raw = float(scores[i])
            state = smoother.update(raw, t, qualities[i].ok)
            ew = tok = None
            if experts is not None and experts.ndim == 3 and experts.shape[1] > 0:
                ew = tuple(tuple(float(x) for x in layer) for layer in experts[i])
            if tokens is not None and tokens.ndim == 4 and tokens.shape[1] > 0:
                tok = tokens[i].copy()
                tok.setflags(write=False)  # results cross threads: nobody may change them
            results.append(TrackResult(tr.track_id, tr.box, raw, state.smoothed, state.verdict,
                                       qualities[i].ok, ew, tok))
        t5 = time.perf_counter()
        timings["smooth"] = (t5 - t4) * 1e3
        timings["total"] = (t5 - t0) * 1e3

        self.last_crops = {tr.track_id: crops[i] for i, tr in enumerate(tracks)}
        self.last_quality = {tr.track_id: qualities[i] for i, tr in enumerate(tracks)}
        return FrameResult(index=index, t=t, frame=frame_bgr, tracks=tuple(results), timings_ms=timings,
                           status="ok", dropped_faces=dropped)

    def update_settings(self, **changes: Any) -> AppConfig:
        """Apply setting changes (AppConfig keys) now; returns the new config. Raises ConfigError on bad values.

        Threshold and smoothing constants re-decide every current track's verdict immediately; detector
        settings rebuild the detector; tracking and quality settings apply from the next frame.
        """
        with self._lock:
            new = self.config.replace(**changes)
            changed = {k for k in changes if getattr(new, k.replace("-", "_")) != getattr(self.config,
                                                                                       k.replace("-", "_"))}
            self.config = new
            if changed & set(_DETECTOR_KEYS):
                old = self.detector
                self.detector = FaceDetector(new.detector_model, new.detector_min_confidence)
                old.close()
            self.tracker.iou_min, self.tracker.max_missed = new.track_iou_min, new.track_max_missed
            self.tracker.set_confirmation(new.track_confirm_hits, new.track_confirm_window)
            params = self._smoothing_params(new)
            if params != self.params:
                self.params = params
                for smoother in self.smoothers.values():
                    smoother.set_params(params)
            log.debug("settings changed: %s", sorted(changed))
            return new

    def status_result(self, index: int, t: float, status: str) -> FrameResult:
        """A FrameResult carrying only a status ("no signal", "end of stream", an error) for the UI/log."""
        return FrameResult(index=index, t=t, frame=None, tracks=(), timings_ms={}, status=status)

    def reset(self) -> None:
        """Forget tracks and smoothing state (e.g. a new source); ids keep increasing, never reused."""
        with self._lock:
            self.tracker.reset()
            self.smoothers.clear()
            self.last_crops, self.last_quality, self.ended_tracks = {}, {}, []

    def close(self) -> None:
        """Release the detector (idempotent). The scorer belongs to the caller."""
        with self._lock:
            if self.detector is not None:
                self.detector.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
