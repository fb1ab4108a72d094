"""GUI entry point: ``run_gui(config) -> exit code`` (called lazily by ``main.py`` without ``--headless``).

Builds the QApplication, the main window or the kiosk window, turns SIGINT / SIGTERM into a normal close,
and guarantees the process ends soon after the window closes: the worker is stopped cooperatively and
waited for with a timeout; if it is stuck in native code (a model still loading, a blocked driver) the
process exits anyway instead of hanging or letting Qt abort on a still-running QThread.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from ..config import AppConfig

log = logging.getLogger(__name__)


def _install_signal_handlers(window: Any) -> QTimer:
    """SIGINT/SIGTERM close the window through the normal path; a timer lets Python run the handlers."""
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: closing", signum)
        QTimer.singleShot(0, window.request_exit)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    tick = QTimer()
    tick.setInterval(200)
    tick.timeout.connect(lambda: None)  # returns to the interpreter so pending signal handlers run
    tick.start()
    return tick


def _undo_opencv_qt_env() -> None:
    """Forget the Qt plugin and font paths that ``import cv2`` points at its own bundled Qt 5.

    opencv-contrib-python (which mediapipe requires) sets QT_QPA_PLATFORM_PLUGIN_PATH and QT_QPA_FONTDIR to
    folders inside the cv2 package; PySide6's Qt 6 then finds cv2's Qt 5 "xcb" plugin first, cannot load it
    and aborts on every real X11 display. Our window never uses OpenCV's HighGUI, so they are dropped.
    """
    for key in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        value = os.environ.get(key, "")
        if value and "cv2" in Path(value).parts:
            log.debug("ignoring %s=%s (set by OpenCV for its own Qt)", key, value)
            del os.environ[key]


def run_gui(config: AppConfig, *, exit_process: bool = True) -> int:
    """Run the window (or the kiosk with ``config.kiosk``) until it is closed; returns the exit code.

    With ``exit_process`` (the app) the process ends right after the window has closed and the worker has
    stopped: logs and streams are flushed, then ``os._exit``. Everything of ours (JSONL, settings, camera,
    detector) is closed by then, and the interpreter's own teardown (torch's exit handlers alone took about
    1.8 s on the development machine) would otherwise break the "closed within 2 s" promise. Tests that
    call ``run_gui`` in-process pass ``exit_process=False`` and get the code back.
    """
    _undo_opencv_qt_env()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("liveness")
    app.setOrganizationName("liveness-app")
    app.setApplicationDisplayName("Face liveness")
    if config.kiosk:
        from .kiosk import KioskWindow
        QGuiApplication.setOverrideCursor(Qt.CursorShape.BlankCursor)
        window: Any = KioskWindow(config)
    else:
        from .main_window import MainWindow
        window = MainWindow(config)
        window.show()
    from .. import startup
    startup.mark("window shown")
    log.info("%s window open (platform %s)", "kiosk" if config.kiosk else "main",
             QGuiApplication.platformName())
    tick = _install_signal_handlers(window)
    code = int(app.exec())
    tick.stop()
    clean = getattr(window, "shutdown_ok", True)
    if not clean:
        # The worker thread did not finish in time (a model still loading, a blocked driver): letting Python
        # tear Qt down now would abort on a running QThread. The OS releases the camera and the model.
        log.warning("exiting with the pipeline worker still busy")
    if exit_process or not clean:
        log.info("window closed; exiting with code %d", code)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
