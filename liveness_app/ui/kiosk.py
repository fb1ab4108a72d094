"""Kiosk mode: fullscreen, frameless, no cursor, no controls, one large message at a time.

Meant to run unattended for days (docs/kiosk.md): the camera is reopened automatically after a loss (the
reader's back-off; a camera missing at start is retried, not replaced by the demo), errors are shown as a
message and logged, nothing ever opens a dialog, and the window closes only through the configured key
sequence (``kiosk_exit_sequence``) or a SIGTERM / SIGINT from the service manager.
"""
from __future__ import annotations

import logging

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import QVBoxLayout, QWidget

from ..config import AppConfig
from ..types import FrameResult
from .banner import Message, VerdictBanner, describe
from .worker import SHUTDOWN_WAIT_S, WorkerController
from .video_view import VideoView

log = logging.getLogger(__name__)


class KioskWindow(QWidget):
    """The unattended terminal's screen: the camera picture and one big message under it."""

    def __init__(self, config: AppConfig, *, controller: WorkerController | None = None, autostart: bool = True,
                 fullscreen: bool = True):
        super().__init__()
        # A kiosk plays a video source in a loop (a demo terminal), never stops at its end.
        self.config = config if config.loop or config.source is None else config.replace(loop=True)
        self.controller = controller or WorkerController(self)
        if self.controller.parent() is None:
            self.controller.setParent(self)
        self.setWindowTitle("Face liveness")
        self.setWindowFlag(Qt.WindowType.FramelessWindowHint, True)
        self.setCursor(Qt.CursorShape.BlankCursor)
        self.setStyleSheet("background: black;")
        self.video_view = VideoView(show_details=False)
        self.video_view.setCursor(Qt.CursorShape.BlankCursor)
        self.message = VerdictBanner(scale=2.2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.video_view, 1)
        layout.addWidget(self.message)
        self.message.set_message(Message("Starting…", "info"))
        self.video_view.set_placeholder("")
        self.last_result: FrameResult | None = None
        self._state = "idle"
        self._exit_allowed = False
        self.shutdown_ok = True
        self.exit_shortcut = QShortcut(QKeySequence(config.kiosk_exit_sequence), self)
        self.exit_shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)
        self.exit_shortcut.activated.connect(self.request_exit)
        # If the service manager stops a busy scorer, an error state stays visible rather than a frozen verdict.
        self._stale = QTimer(self)
        self._stale.setInterval(3000)
        self._stale.setSingleShot(True)
        self._stale.timeout.connect(self._on_stale)
        c = self.controller
        c.frame_ready.connect(self._on_frame_ready)
        c.result_ready.connect(self._on_result)
        c.state_changed.connect(self._on_state)
        c.notice.connect(lambda n: log.info("kiosk notice (%s, %s): %s", n.topic, n.level, n.text))
        if fullscreen:
            screen = self.screen() or QGuiApplication.primaryScreen()
            if screen is not None:
                # without a window manager (a bare X session on a kiosk) nobody honours the fullscreen state:
                # cover the screen ourselves as well
                self.setGeometry(screen.geometry())
            self.showFullScreen()
        if autostart:
            self.controller.start(self.config)

    @property
    def message_text(self) -> str:
        return self.message.text()

    @Slot()
    def _on_frame_ready(self) -> None:
        frame = self.controller.take_frame()
        if frame is not None:
            self.video_view.set_frame(frame.image, frame.t)

    @Slot(object)
    def _on_result(self, result: FrameResult) -> None:
        self.last_result = result
        self.video_view.set_result(result)
        if not getattr(self, "_first_verdict_marked", False) and any(t.verdict != "uncertain"
                                                                     for t in result.tracks):
            self._first_verdict_marked = True  # launch-to-first-verdict trace (liveness_app/startup.py)
            from .. import startup
            if startup.mark_once("first verdict on screen"):
                logging.getLogger(__name__).info("%s", startup.summary())
        if self._state in ("running", "loading", "idle"):
            self.message.set_message(describe(result, kiosk=True))
        self._stale.start()

    @Slot(str, str)
    def _on_state(self, state: str, message: str) -> None:
        self._state = state
        if state == "no signal":
            self.message.set_message(Message("Camera unavailable: reconnecting…", "warning"))
            self.video_view.set_result(None)
        elif state == "error":
            self.message.set_message(Message("Temporarily out of service", "error"))
            log.error("kiosk out of service: %s", message)
        elif state == "loading":
            self.message.set_message(Message("Starting…", "info"))
        elif state == "running":
            self.message.set_message(describe(self.last_result, kiosk=True) if self.last_result else
                                     Message("Please look at the camera", "info"))

    def _on_stale(self) -> None:
        if self._state == "running":
            # no scored frame for 3 s while running: say so instead of showing an old verdict
            self.message.set_message(Message("Please wait…", "info"))
            self.video_view.set_result(None)

    def request_exit(self) -> None:
        """Leave kiosk mode (the exit key sequence, or SIGTERM / SIGINT)."""
        log.info("kiosk exit requested")
        self._exit_allowed = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._exit_allowed:
            log.info("kiosk: close ignored (use %s)", self.config.kiosk_exit_sequence)
            event.ignore()
            return
        self._stale.stop()
        self.shutdown_ok = self.controller.shutdown(timeout_s=SHUTDOWN_WAIT_S)
        event.accept()

    def keyPressEvent(self, event) -> None:  # noqa: ANN001 - Qt override
        event.accept()  # swallow everything except the exit shortcut (handled by QShortcut)
