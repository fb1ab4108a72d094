"""Application settings: one frozen dataclass, loaded from TOML and command-line flags, validated in one place.

The TOML file uses the same keys as the command-line flags (``max_faces`` or ``max-faces``), flat at top level;
optional tables ``[smoothing]``, ``[quality]``, ``[tracking]``, ``[detector]``, ``[capture]``, ``[audit]`` and
``[ui]`` are accepted too and flattened (their keys are the field names below). Flags override the file.

Every constant of the real-time engine is a field of ``AppConfig`` below, declared once with its default and
meaning (ranges: ``_validate``); ``smoothing.SmoothingParams`` takes its defaults from here.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .ops.assets import ASSETS_DIR

ASSETS = ASSETS_DIR  # the installed package's assets, else the checkout's assets/ (liveness_app/ops/assets.py)
DEFAULT_DETECTOR = ASSETS / "face_detection_short_range.tflite"
DEMO_VIDEO = ASSETS / "demo.mp4"
BACKENDS = ("auto", "tensorrt", "cuda", "cpu", "openvino", "onnxruntime", "torch")  # last 3: a CPU engine by name
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TABLES = ("smoothing", "quality", "tracking", "detector", "capture", "audit", "ui")


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names the key and what is allowed."""


@dataclass(frozen=True)
class AppConfig:
    """All settings of the app: each field's comment gives its meaning, the declaration its default."""

    # camera index, video file, image folder or stream URL (None: camera 0)
    source: str | int | None = None
    # restart a video file / image folder at its end
    loop: bool = False
    # ``.safetensors`` checkpoint (None: the bundled default model)
    model: str | None = None
    # scorer backend: auto | tensorrt | cuda | cpu (or openvino | onnxruntime | torch)
    backend: str = "auto"
    # faces scored per frame; beyond it the largest faces win
    max_faces: int = 4
    # verdict JSONL path (headless)
    output: str | None = None
    # mediapipe short-range face detector (``face_detection_short_range.tflite``)
    detector_model: str = str(DEFAULT_DETECTOR)
    # detector minimum confidence (the face-crop contract: README "How it works")
    detector_min_confidence: float = 0.5
    # minimum box IoU to continue a track
    track_iou_min: float = 0.3
    # frames a track survives without a matching detection
    track_max_missed: int = 5
    # a new face becomes a track (shown, written, counted) once it was detected in this many of
    track_confirm_hits: int = 3
    # ... its last track_confirm_window frames (1 of 1: at once)
    track_confirm_window: int = 5
    # centre of the hysteresis band (None: the threshold stored with the model)
    threshold: float | None = None
    # half-width of the band: enter attack at thr + h, leave it below thr - h
    hysteresis: float = 0.05
    # EMA time constant in seconds (weights decay by time, not by frames)
    ema_tau_s: float = 0.4
    # quality-passing observations a track needs before any verdict
    min_evidence_frames: int = 3
    # seconds between a track's first and latest counted observation before any verdict
    min_evidence_s: float = 0.2
    # quality gate: faces whose smaller box side is below this do not count
    min_face_px: float = 40.0
    # quality gate: variance of the Laplacian of the grey crop (at 128 px); rejects 1-3 % of the webcam /
    # web-photo training crops, none of the rest
    min_sharpness: float = 15.0
    # quality gate: largest fraction of the 1.5x crop square that may lie outside the frame (a face at the edge
    # or too close to the camera)
    max_cutoff: float = 0.2
    # first wait before reopening a lost camera / stream (doubles each failure)
    reopen_backoff_s: float = 0.5
    # longest wait between reopen attempts
    reopen_backoff_max_s: float = 8.0
    # a live source without a frame for this long reports "no signal"
    no_signal_after_s: float = 1.0
    # frame rate assigned to image folders (their timestamps are index / fps)
    folder_fps: float = 10.0
    # JSONL log of verdict changes per track (time, track, verdict, score)
    audit_log: str | None = None
    # also save the face crop of each verdict change (privacy: off by default)
    save_crops: bool = False
    # where crops go (None: ``crops/`` next to the audit log)
    crops_dir: str | None = None
    # most crop files kept; the oldest are deleted beyond it
    crops_retention: int = 500
    # folder for logs (None: the user log folder of platformdirs)
    log_dir: str | None = None
    # return MoE routing per face (for the UI; read from the same model call that scores it)
    expert_weights: bool = False
    # fullscreen unattended mode (UI)
    kiosk: bool = False
    # key sequence that leaves kiosk mode (UI)
    kiosk_exit_sequence: str = "Ctrl+Shift+Q"
    # run without a window
    headless: bool = False
    # use the bundled demo video
    demo: bool = False
    # stop after this many frames (tests, soak runs)
    max_frames: int | None = None
    # DEBUG | INFO | WARNING | ERROR
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> "AppConfig":
        """A copy with ``changes`` applied (same normalisation and validation as loading)."""
        return dataclasses.replace(self, **normalize(changes))

    @property
    def source_spec(self) -> str | int:
        """The source to open: the configured one, else the demo video with ``demo``, else camera 0."""
        if self.source is not None:
            return self.source
        return str(DEMO_VIDEO) if self.demo else 0


FIELD_NAMES = tuple(f.name for f in fields(AppConfig))


def _range(key: str, value: Any, lo: float | None, hi: float | None, lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key} must be in {'(' if lo_open else '['}{lo_s}, {hi_s}], got {value!r}")


def _validate(c: AppConfig) -> None:
    """Raise ConfigError naming the key and its allowed range for the first bad value."""
    if c.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {c.backend!r}")
    if c.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {c.log_level!r}")
    for key in ("max_faces", "track_max_missed", "track_confirm_hits", "track_confirm_window",
                "min_evidence_frames", "crops_retention"):
        v = getattr(c, key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key} must be an integer, got {v!r}")
    _range("max_faces", c.max_faces, 1, 64)
    _range("track_max_missed", c.track_max_missed, 0, 1000)
    _range("track_confirm_window", c.track_confirm_window, 1, 100)
    _range("track_confirm_hits", c.track_confirm_hits, 1, c.track_confirm_window)
    _range("min_evidence_frames", c.min_evidence_frames, 1, 10_000)
    _range("crops_retention", c.crops_retention, 0, None)
    _range("detector_min_confidence", c.detector_min_confidence, 0.0, 1.0)
    _range("track_iou_min", c.track_iou_min, 0.0, 1.0, lo_open=True)
    if c.threshold is not None:
        _range("threshold", c.threshold, 0.0, 1.0)
    _range("hysteresis", c.hysteresis, 0.0, 0.5)
    _range("ema_tau_s", c.ema_tau_s, 0.0, 60.0)
    _range("min_evidence_s", c.min_evidence_s, 0.0, 600.0)
    _range("min_face_px", c.min_face_px, 0.0, 4096.0)
    _range("min_sharpness", c.min_sharpness, 0.0, None)
    _range("max_cutoff", c.max_cutoff, 0.0, 1.0)
    _range("reopen_backoff_s", c.reopen_backoff_s, 0.0, 60.0, lo_open=True)
    _range("reopen_backoff_max_s", c.reopen_backoff_max_s, c.reopen_backoff_s, 3600.0)
    _range("no_signal_after_s", c.no_signal_after_s, 0.0, 3600.0, lo_open=True)
    _range("folder_fps", c.folder_fps, 0.0, 1000.0, lo_open=True)
    if c.max_frames is not None:
        if isinstance(c.max_frames, bool) or not isinstance(c.max_frames, int):
            raise ConfigError(f"max_frames must be an integer, got {c.max_frames!r}")
        _range("max_frames", c.max_frames, 1, None)
    if not isinstance(c.kiosk_exit_sequence, str) or not c.kiosk_exit_sequence.strip():
        raise ConfigError(f"kiosk_exit_sequence must be a key sequence such as 'Ctrl+Shift+Q', "
                          f"got {c.kiosk_exit_sequence!r}")
    for key in ("loop", "save_crops", "expert_weights", "kiosk", "headless", "demo"):
        if not isinstance(getattr(c, key), bool):
            raise ConfigError(f"{key} must be true or false, got {getattr(c, key)!r}")
    if c.source is not None and not isinstance(c.source, (str, int)) or isinstance(c.source, bool):
        raise ConfigError(f"source must be a camera index, a path or a URL, got {c.source!r}")


def normalize(values: dict[str, Any]) -> dict[str, Any]:
    """Map flag-style keys (``max-faces``) to field names, flatten known tables, reject unknown keys."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name in _TABLES and isinstance(value, dict):
            out.update(normalize(value))
            continue
        if name not in FIELD_NAMES:
            raise ConfigError(f"unknown setting {key!r}; valid keys: {', '.join(FIELD_NAMES)}")
        if name == "source" and isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())  # "0" means camera 0, as on the command line
        if name in ("hysteresis", "threshold", "ema_tau_s", "min_evidence_s", "min_face_px", "min_sharpness",
                    "max_cutoff", "detector_min_confidence", "track_iou_min", "reopen_backoff_s",
                    "reopen_backoff_max_s", "no_signal_after_s", "folder_fps") \
                and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[name] = value
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML settings file into normalised field values (no validation of ranges yet)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    try:
        return normalize(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_config(path: str | Path | None = None, **overrides: Any) -> AppConfig:
    """Build the AppConfig: defaults, then the TOML file (if any), then ``overrides`` (None values ignored).

    Raises ConfigError with the key, the bad value and the allowed range or choices.
    """
    values: dict[str, Any] = load_toml(path) if path is not None else {}
    values.update(normalize({k: v for k, v in overrides.items() if v is not None}))
    try:
        return AppConfig(**values)
    except TypeError as e:  # a wrong type that dataclass construction itself rejects
        raise ConfigError(str(e)) from e
