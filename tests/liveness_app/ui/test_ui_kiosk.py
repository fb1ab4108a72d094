"""Kiosk mode offscreen: fullscreen and frameless, no cursor, no visible controls, one message at a time,
closed only by the configured key sequence, a missing camera retried rather than replaced by the demo."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QKeySequence  # noqa: E402
from PySide6.QtWidgets import (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit,  # noqa: E402
                               QMenuBar, QToolBar)

from liveness_app.config import AppConfig  # noqa: E402
from liveness_app.ui.kiosk import KioskWindow  # noqa: E402
from liveness_app.ui.worker import WorkerController  # noqa: E402

CONTROL_TYPES = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit, QToolBar, QMenuBar)


def torch_scorer(model, backend="auto"):
    from liveness_app.scorer import create_scorer
    return create_scorer(model, backend="torch")


@pytest.fixture
def make_kiosk(qtbot):
    """Builds kiosk windows on the real engine; keeps them alive and leaves them (exit sequence path) after."""
    windows: list[KioskWindow] = []

    def make(config: AppConfig, demo_video=None, source_factory=None) -> KioskWindow:
        extra = {"demo_video": demo_video} if demo_video else {}
        if source_factory is not None:
            extra["source_factory"] = source_factory
        controller = WorkerController(create_scorer=torch_scorer, **extra)
        k = KioskWindow(config, controller=controller)
        qtbot.addWidget(k, before_close_func=lambda w: w.request_exit())
        windows.append(k)
        return k

    yield make
    for k in windows:
        k.request_exit()
        qtbot.waitUntil(lambda: k.controller.idle, timeout=10_000)


def test_kiosk_is_fullscreen_frameless_without_controls_and_shows_verdicts(qtbot, make_kiosk, tiny_checkpoint,
                                                                           face_clip, tmp_path):
    clip, _ = face_clip
    audit = tmp_path / "audit" / "verdicts.jsonl"
    k = make_kiosk(AppConfig(source=str(clip), model=str(tiny_checkpoint), kiosk=True, audit_log=str(audit),
                             min_evidence_frames=2, min_evidence_s=0.1))
    qtbot.waitExposed(k)
    assert k.isFullScreen()
    assert k.windowFlags() & Qt.WindowType.FramelessWindowHint
    assert k.cursor().shape() == Qt.CursorShape.BlankCursor
    assert k.config.loop  # a kiosk never stops at the end of a video
    visible_controls = [w for t in CONTROL_TYPES for w in k.findChildren(t) if w.isVisible()]
    assert visible_controls == []
    qtbot.waitUntil(lambda: k.message_text in ("Live", "Attack detected"), timeout=60_000)
    assert k.video_view.frame is not None
    # the audit log records each face's verdict changes (an unattended kiosk keeps a trail)
    qtbot.waitUntil(lambda: audit.is_file() and any('"verdict": "live"' in x or '"verdict": "attack"' in x
                                                    for x in audit.read_text().splitlines()), timeout=10_000)


def test_kiosk_closes_only_through_the_exit_sequence(qtbot, make_kiosk, tiny_checkpoint, face_clip):
    clip, _ = face_clip
    k = make_kiosk(AppConfig(source=str(clip), model=str(tiny_checkpoint), kiosk=True,
                                    kiosk_exit_sequence="Ctrl+Alt+X"))
    qtbot.waitExposed(k)
    qtbot.waitUntil(lambda: k.controller.worker is not None and k.controller.worker.state == "running",
                    timeout=60_000)
    k.close()  # Alt+F4, a window manager's close button...
    assert k.isVisible()
    qtbot.keyClick(k, Qt.Key.Key_Escape)
    assert k.isVisible()
    seq = QKeySequence("Ctrl+Alt+X")[0]
    qtbot.keyClick(k, seq.key(), seq.keyboardModifiers())
    qtbot.waitUntil(lambda: not k.isVisible(), timeout=3_000)
    qtbot.waitUntil(lambda: k.controller.idle, timeout=10_000)  # every worker thread ends


def test_kiosk_says_look_at_the_camera_without_a_face(qtbot, make_kiosk, tiny_checkpoint, tmp_path):
    from media import make_face_video
    clip = tmp_path / "empty.mp4"
    make_face_video(clip, frames=12, fps=12.0, faces=())
    k = make_kiosk(AppConfig(source=str(clip), model=str(tiny_checkpoint), kiosk=True))
    qtbot.waitUntil(lambda: k.message_text == "Please look at the camera", timeout=60_000)


def test_kiosk_retries_a_missing_camera_instead_of_playing_the_demo(qtbot, make_kiosk, tiny_checkpoint, face_clip):
    clip, _ = face_clip
    k = make_kiosk(AppConfig(source=57, model=str(tiny_checkpoint), kiosk=True, reopen_backoff_s=0.2),
                   demo_video=clip)
    qtbot.waitUntil(lambda: k.message_text == "Camera unavailable: reconnecting…", timeout=20_000)
    qtbot.wait(600)  # a few retries later: still no demo, still the message
    assert k.video_view.frame is None
    assert k.message_text == "Camera unavailable: reconnecting…"


def test_kiosk_model_error_is_a_message(qtbot, make_kiosk, tmp_path, face_clip):
    clip, _ = face_clip
    k = make_kiosk(AppConfig(source=str(clip), model=str(tmp_path / "missing.safetensors"), kiosk=True))
    qtbot.waitUntil(lambda: k.message_text == "Temporarily out of service", timeout=60_000)
    qtbot.waitUntil(lambda: k.video_view.frame is not None, timeout=10_000)  # the picture stays alive


class UnpluggableCamera:
    """Stands in for a USB camera (none exists on CI): frames come from a looping video file through
    cv2.VideoCapture, and ``unplug(seconds)`` makes reads and re-opens fail for that long, like a pulled cable."""

    back_at = 0.0  # monotonic time the cable is back (shared by every capture of the "device")

    def __init__(self, clip):
        import cv2
        self._cv2 = cv2
        self._clip = str(clip)
        self._cap = cv2.VideoCapture(self._clip) if self.plugged() else None

    @classmethod
    def plugged(cls) -> bool:
        return time.monotonic() >= cls.back_at

    def isOpened(self) -> bool:
        return self._cap is not None and self._cap.isOpened()

    def read(self):
        if not self.plugged():
            return False, None
        ok, image = self._cap.read()
        if not ok:  # the "camera" never ends: loop the clip
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        time.sleep(1 / 12)  # camera rate
        return ok, image

    def get(self, prop):
        return self._cap.get(prop)

    def set(self, prop, value):
        return self._cap.set(prop, value)

    def release(self):
        if self._cap is not None:
            self._cap.release()


def test_kiosk_shows_camera_loss_and_recovers_by_itself(qtbot, make_kiosk, tiny_checkpoint, face_clip):
    from liveness_app.sources import open_source
    clip, _ = face_clip
    UnpluggableCamera.back_at = 0.0

    def camera(spec, loop=False, folder_fps=10.0):
        return open_source(spec, loop, folder_fps=folder_fps, capture_factory=lambda s: UnpluggableCamera(clip))

    k = make_kiosk(AppConfig(source=0, model=str(tiny_checkpoint), kiosk=True, reopen_backoff_s=0.2,
                             reopen_backoff_max_s=0.4, min_evidence_frames=1, min_evidence_s=0.0),
                   source_factory=camera)
    qtbot.waitUntil(lambda: k.message_text in ("Live", "Attack detected"), timeout=60_000)
    UnpluggableCamera.back_at = time.monotonic() + 1.5  # pull the cable for 1.5 s
    qtbot.waitUntil(lambda: k.message_text == "Camera unavailable: reconnecting…", timeout=10_000)
    qtbot.waitUntil(lambda: k.message_text in ("Live", "Attack detected", "Checking… please hold still"),
                    timeout=20_000)
    assert k.controller.worker.reader.reopens >= 1
