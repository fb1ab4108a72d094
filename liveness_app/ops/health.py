"""``main.py --check``: verify camera/source, assets, model, backend, face detector and log folder; print a table.

Each check gives "ok", "warn" or "FAIL" and a one-line detail saying what is wrong and what to do. Exit code
(``run_checks`` -> ``exit_code``): 0 when nothing FAILed (warnings allowed), 1 otherwise. A missing camera is a
warning, not a failure: the app itself keeps running without one (the GUI offers the bundled demo clip, the
kiosk retries the camera with back-off), so a machine set up correctly but with the camera unplugged still
passes, and the table says "no camera". Everything else the scorer needs (assets matching SHA256SUMS, a model
that loads, a backend that runs a batch, the detector) is a failure when broken.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import DEMO_VIDEO, AppConfig
from ..sources import SourceError, open_capture, open_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One line of the --check report: the component, "ok" | "warn" | "FAIL", and what was found."""

    name: str
    state: str
    detail: str


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    """Run one check; an unexpected exception becomes a FAIL line naming it (never a traceback)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the point is to report anything at all
        log.debug("check %s failed", name, exc_info=True)
        return Check(name, "FAIL", f"{type(e).__name__}: {e}".replace("\n", " "))


def check_source(config: AppConfig, capture_factory: Callable[[Any], Any] = open_capture) -> Check:
    """The configured source: a camera index is opened and read once; a file/folder/URL is opened and read."""
    spec = config.source_spec
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if isinstance(spec, int):
        cap = capture_factory(spec)
        try:
            if cap is None or not cap.isOpened():
                fallback = f"; the bundled demo clip {DEMO_VIDEO.name} can be used (--demo)" \
                    if DEMO_VIDEO.is_file() else ""
                return Check("camera", "warn", f"no camera at index {spec} (connect one or pass --source){fallback}")
            ok, image = cap.read()
            if not ok or image is None:
                return Check("camera", "warn", f"camera {spec} opens but delivers no frame (in use by another "
                                               "program?)")
            return Check("camera", "ok", f"camera {spec}: {image.shape[1]}x{image.shape[0]}")
        finally:
            if cap is not None:
                cap.release()

    try:
        src = open_source(spec, folder_fps=config.folder_fps, capture_factory=capture_factory)
    except SourceError as e:
        return Check("source", "FAIL", str(e))
    with src:
        frame = src.read()
    if frame is None:
        return Check("source", "FAIL", f"{spec} opens but yields no frame (corrupt or empty?)")
    h, w = frame.image.shape[:2]
    return Check("source", "ok", f"{spec}: first frame {w}x{h}")


def check_assets() -> Check:
    """assets/ against assets/SHA256SUMS: altered or missing files fail, unlisted files warn."""
    from .assets import check_assets as _check

    statuses = _check()
    bad = [s for s in statuses if s.state in ("missing", "altered")]
    if bad:
        return Check("assets", "FAIL", "; ".join(f"{s.name} {s.state}: {s.detail}" for s in bad))
    unlisted = [s.name for s in statuses if s.state == "unlisted"]
    ok = sum(s.ok for s in statuses)
    if unlisted:
        return Check("assets", "warn", f"{ok} verified; no recorded hash for {', '.join(unlisted)} "
                                       "(run `python -m liveness_app.ops.assets --write` and commit)")
    return Check("assets", "ok", f"{ok} files match SHA256SUMS")


def check_detector(config: AppConfig) -> Check:
    """The mediapipe face detector loads (after its hash check) and runs on one frame."""
    from .assets import verify_file
    from ..detection import FaceDetector

    verify_file(config.detector_model)
    with FaceDetector(config.detector_model, config.detector_min_confidence) as det:
        det.detect(np.zeros((120, 160, 3), np.uint8), 0.0)
    return Check("detector", "ok", f"mediapipe {Path(config.detector_model).name}")


def check_model_and_backend(config: AppConfig) -> list[Check]:
    """Load the model (hash, config, threshold), build the backend ``config.backend`` and score one batch."""
    from .assets import sha256_file
    from ..scorer import create_scorer, load_weights

    try:
        ckpt = load_weights(config.model)
    except Exception as e:  # FileNotFoundError, CheckpointError, AssetError: all say what is wrong
        return [Check("model", "FAIL", str(e).replace("\n", " ")),
                Check("backend", "FAIL", "not tried: no model")]
    where = ckpt.path if ckpt.path is not None else f"config {config.model!r} (fresh weights)"
    digest = f", sha256 {sha256_file(ckpt.path)[:12]}" if ckpt.path is not None else ""
    model = Check("model", "ok", f"{where}{digest}, {ckpt.preprocessing.size} px, threshold {ckpt.threshold:.3f}")
    try:
        t0 = time.perf_counter()
        scorer = create_scorer(ckpt, config.backend)  # the app's own path: agreement crops, deferred int8 build
        runtime = scorer.runtime
        s = ckpt.preprocessing.size
        scores = scorer.score([np.full((s, s, 3), 128, np.uint8)] * 2)
        if scores.shape != (2,) or not np.all(np.isfinite(scores)):
            return [model, Check("backend", "FAIL", f"{runtime.name} returned {scores!r} for 2 crops")]
        ms = (time.perf_counter() - t0) * 1e3
        notice = f"; {runtime.notice}" if runtime.notice else ""
        return [model, Check("backend", "ok", f"{config.backend} -> {runtime.name} on {runtime.device} "
                                              f"(built and scored a batch in {ms:.0f} ms){notice}")]
    except Exception as e:
        return [model, Check("backend", "FAIL", f"{config.backend}: {e}".replace("\n", " "))]


def check_log_dir(config: AppConfig) -> Check:
    """The log folder exists or can be created, and is writable."""
    from .logs import log_dir

    folder = log_dir(config.log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".write-test"
    probe.write_text("ok")
    probe.unlink()
    return Check("logs", "ok", str(folder))


def run_checks(config: AppConfig, capture_factory: Callable[[Any], Any] = open_capture) -> list[Check]:
    """Every check, in order: source/camera, assets, detector, model, backend, log folder."""
    checks = [_guard("camera", lambda: check_source(config, capture_factory)),
              _guard("assets", check_assets),
              _guard("detector", lambda: check_detector(config))]
    try:
        checks += check_model_and_backend(config)
    except Exception as e:  # noqa: BLE001
        checks.append(Check("model", "FAIL", f"{type(e).__name__}: {e}"))
    checks.append(_guard("logs", lambda: check_log_dir(config)))
    return checks


def format_checks(checks: list[Check]) -> str:
    """The report table: one line per check, then the overall result."""
    lines = [f"  {c.state:<4}  {c.name:<9} {c.detail}" for c in checks]
    fails = [c.name for c in checks if c.state == "FAIL"]
    warns = [c.name for c in checks if c.state == "warn"]
    lines.append("result: " + (f"FAIL ({', '.join(fails)})" if fails else
                               f"ok with warnings ({', '.join(warns)})" if warns else "ok"))
    return "liveness --check\n" + "\n".join(lines)


def exit_code(checks: list[Check]) -> int:
    """0 when no check FAILed (warnings such as "no camera" allowed), else 1."""
    return 1 if any(c.state == "FAIL" for c in checks) else 0
