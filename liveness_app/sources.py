"""Frame sources: camera index, video file, image folder, stream URL behind one ``read() -> Frame | None``.

Cameras and streams are read through ``cv2.VideoCapture`` and stamped with the monotonic clock at capture;
video files carry their own file timestamps (``CAP_PROP_POS_MSEC``), continued across loops so time never
goes backwards; image folders are stamped ``index / folder_fps``. ``LatestFrameReader`` runs a source on its
own thread and keeps only the newest frame (a slow model never makes frames queue up), reopening a lost
camera with exponential back-off and reporting "no signal" meanwhile. ``PacedTap`` plays files and folders at
their own frame rate and ``FrameMailbox`` holds the newest frame for the window; ``source_label`` and
``list_cameras`` name and list sources for it.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class Frame:
    """One captured frame: BGR H x W x 3 uint8 image, time in seconds, 0-based index within the run."""

    image: np.ndarray
    t: float
    index: int


class SourceError(RuntimeError):
    """A source could not be opened; the message names it and says what to check."""


class FrameSource:
    """Common interface: ``read()`` returns the next Frame or None (end of stream / lost signal)."""

    spec: str | int
    is_live: bool = False  # camera or stream: timestamps are capture times and a lost signal is reopened
    fps: float = 0.0

    def read(self) -> Frame | None:
        raise NotImplementedError

    def reopen(self) -> bool:
        """Try to open the device again after a lost signal; True when it is readable again."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextmanager
def _quiet_opencv():
    """Silence OpenCV's own log for the block (the level is process-wide, so keep the block short)."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def open_capture(spec: str | int) -> cv2.VideoCapture:
    """``cv2.VideoCapture(spec)``, the default capture factory; a camera index is probed with OpenCV's log off.

    Opening a missing camera makes every videoio backend print warnings and errors to stderr (about ten lines
    per attempt). Callers report the outcome in one clear message, and a kiosk retrying an unplugged camera for
    days would otherwise fill its journal with them.
    """
    if isinstance(spec, int):
        with _quiet_opencv():
            return cv2.VideoCapture(spec)
    return cv2.VideoCapture(spec)


CaptureFactory = Callable[[str | int], Any]  # spec -> an object with cv2.VideoCapture's isOpened/read/get/release


class VideoCaptureSource(FrameSource):
    """A ``cv2.VideoCapture`` over a camera index, a video file or a stream URL.

    ``capture_factory`` builds the capture (default ``open_capture``); tests substitute one that fails
    on purpose, since no camera exists on CI machines.
    """

    def __init__(self, spec: str | int, *, loop: bool = False, live: bool | None = None,
                 capture_factory: CaptureFactory = open_capture):
        self.spec = spec
        self.is_live = isinstance(spec, int) if live is None else live
        self.loop = loop and not self.is_live
        self._factory = capture_factory
        self._index = 0
        self._t_offset = 0.0  # seconds added after each loop so file time keeps increasing
        self._last_t = -1.0
        self._read_in_pass = 0
        self._cap = self._open()
        if self._cap is None:
            kind = "camera" if isinstance(spec, int) else "stream" if self.is_live else "video file"
            hint = ("check that it is connected and not used by another program" if isinstance(spec, int)
                    else "check the path and that OpenCV can decode its format")
            raise SourceError(f"cannot open {kind} {spec!r}: {hint}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 30.0

    def _open(self) -> Any:
        cap = self._factory(self.spec)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        return cap

    def read(self) -> Frame | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if (not ok or image is None) and self.loop and self._read_in_pass > 0:
            self._t_offset = self._last_t + 1.0 / self.fps
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._read_in_pass = 0
            ok, image = self._cap.read()
            if not ok:  # some containers cannot seek; reopen instead
                self._cap.release()
                self._cap = self._open()
                ok, image = (False, None) if self._cap is None else self._cap.read()
        if not ok or image is None:
            return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self.is_live:
            t = time.monotonic()
        else:
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
            t_file = pos_ms / 1000.0 if (pos_ms > 0 or self._read_in_pass == 0) else self._read_in_pass / self.fps
            t = self._t_offset + t_file
            if t <= self._last_t:  # containers without usable timestamps: fall back to the frame rate
                t = self._last_t + 1.0 / self.fps
        self._read_in_pass += 1
        self._last_t = t
        frame = Frame(image=image, t=t, index=self._index)
        self._index += 1
        return frame

    def reopen(self) -> bool:
        if self._cap is not None:
            self._cap.release()
        self._cap = self._open()
        return self._cap is not None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(FrameSource):
    """Images of a folder in name order, stamped ``index / fps`` seconds (no capture times exist)."""

    def __init__(self, folder: str | Path, *, loop: bool = False, fps: float = 10.0):
        self.spec = str(folder)
        self.fps = fps
        self.loop = loop
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise SourceError(f"image folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        self._pos = 0
        self._index = 0

    def read(self) -> Frame | None:
        while True:
            if self._pos >= len(self.paths):
                if not self.loop:
                    return None
                self._pos = 0
            path = self.paths[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", path)
                if not self.loop and self._pos >= len(self.paths):
                    return None
                continue
            frame = Frame(image=image, t=self._index / self.fps, index=self._index)
            self._index += 1
            return frame


def open_source(spec: str | int, loop: bool = False, *, folder_fps: float = 10.0,
                capture_factory: CaptureFactory = open_capture) -> FrameSource:
    """Open a camera (int or digit string), a stream URL, an image folder or a video file.

    Raises SourceError (a missing path is named, with what to do) when it cannot be opened.
    """
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        return VideoCaptureSource(spec, live=True, capture_factory=capture_factory)
    if spec.lower().startswith(URL_PREFIXES):
        return VideoCaptureSource(spec, live=True, capture_factory=capture_factory)
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path, loop=loop, fps=folder_fps)
    if not path.is_file():
        raise SourceError(f"source not found: {spec} (give a camera index, a video file, an image folder "
                          f"or a stream URL)")
    return VideoCaptureSource(str(path), loop=loop, live=False, capture_factory=capture_factory)


class LatestFrameReader:
    """Reads a source on a background thread; ``latest()`` returns only the newest unseen frame.

    Older frames are overwritten, never queued. A live source (camera, stream) that stops delivering is
    reopened with exponential back-off (``backoff_s`` doubling up to ``backoff_max_s``); ``status`` is then
    "no signal". A file source that ends sets ``status`` to "end of stream". ``stop()`` is cooperative: it
    sets a flag and joins with a timeout, so it never hangs on a blocked device.
    """

    def __init__(self, source: FrameSource, *, backoff_s: float = 0.5, backoff_max_s: float = 8.0,
                 no_signal_after_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.no_signal_after_s = no_signal_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._latest: Frame | None = None
        self._fresh = False
        self._status = "starting"
        self._last_frame_at = clock()
        self.frames_read = 0
        self.frames_dropped = 0  # frames overwritten before anyone took them
        self.reopen_attempts = 0
        self.reopens = 0
        self.outages = 0  # times a live source lost its signal (each followed by reopen attempts)
        self._index_offset = 0
        self._thread: threading.Thread | None = None

    @property
    def status(self) -> str:
        """"ok" | "no signal" | "end of stream" | "starting" | "stopped"."""
        with self._lock:
            if self._status == "ok" and self.source.is_live and \
                    self._clock() - self._last_frame_at > self.no_signal_after_s:
                return "no signal"
            return self._status

    def start(self) -> "LatestFrameReader":
        if self._thread is not None:
            raise RuntimeError("LatestFrameReader already started")
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()
        return self

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._fresh:
                self.frames_dropped += 1
            self._latest = frame
            self._fresh = True
            self._status = "ok"
            self._last_frame_at = self._clock()
            self.frames_read += 1
            self._cond.notify_all()

    def _set_status(self, status: str) -> None:
        with self._cond:
            self._status = status
            self._cond.notify_all()

    def _run(self) -> None:
        wait = self.backoff_s
        last_index = -1
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except Exception:  # a driver error is a lost signal, not a dead thread
                log.exception("reading %r failed", self.source.spec)
                frame = None
            if frame is not None:
                # indices stay increasing across reopen (a reopened capture counts from where it is)
                if frame.index + self._index_offset <= last_index:
                    self._index_offset = last_index + 1 - frame.index
                frame = Frame(frame.image, frame.t, frame.index + self._index_offset)
                last_index = frame.index
                self._publish(frame)
                wait = self.backoff_s
                continue
            if not self.source.is_live:
                self._set_status("end of stream")
                return
            if wait == self.backoff_s:  # first failure of this outage
                self.outages += 1
            self._set_status("no signal")
            log.warning("no signal from %r; reopening in %.2f s", self.source.spec, wait)
            if self._stop.wait(wait):
                break
            self.reopen_attempts += 1
            try:
                ok = self.source.reopen()
            except Exception:
                log.exception("reopening %r failed", self.source.spec)
                ok = False
            if ok:
                self.reopens += 1
                log.info("reopened %r after %d attempt(s)", self.source.spec, self.reopen_attempts)
            else:
                wait = min(wait * 2.0, self.backoff_max_s)
        self._set_status("stopped")

    def latest(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet returned, or None; waits up to ``timeout`` seconds for one."""
        with self._cond:
            if not self._fresh and timeout:
                end = time.monotonic() + timeout
                while not self._fresh and self._status in ("ok", "starting", "no signal"):
                    left = end - time.monotonic()
                    if left <= 0 or self._stop.is_set():
                        break
                    self._cond.wait(min(left, 0.05))
            if not self._fresh:
                return None
            self._fresh = False
            return self._latest

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to stop and join it; True when it ended within ``timeout`` seconds."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        if alive:
            log.warning("frame reader for %r did not stop within %.1f s", self.source.spec, timeout)
        return not alive

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# --- display side: pacing and the newest frame for the window (Qt-free; ui.worker uses them) -------------
class PacedTap(FrameSource):
    """Wraps a source: hands every frame to ``on_frame`` and, for files and folders, paces reads to real time.

    Pacing maps the frame's source time to wall time (frame at t plays ``t - t0`` seconds after the first),
    waiting on ``stop`` so an abort ends the wait at once. When reading falls behind by more than
    ``resync_s`` (a slow disk, a paused process) the clock is re-anchored instead of racing to catch up.
    """

    def __init__(self, inner: FrameSource, on_frame: Callable[[Frame], None], stop: threading.Event, *,
                 pace: bool | None = None, resync_s: float = 0.5):
        self.inner = inner
        self.spec = inner.spec
        self.is_live = inner.is_live
        self.fps = inner.fps
        self.on_frame = on_frame
        self.stop = stop
        self.pace = (not inner.is_live) if pace is None else pace
        self.resync_s = resync_s
        self._anchor: tuple[float, float] | None = None  # (source t, wall time) of the reference frame

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None or self.stop.is_set():
            return frame
        if self.pace:
            now = time.monotonic()
            if self._anchor is None or frame.t < self._anchor[0]:
                self._anchor = (frame.t, now)
            due = self._anchor[1] + (frame.t - self._anchor[0])
            if due - now > 0:
                self.stop.wait(due - now)  # returns early on abort
            elif now - due > self.resync_s:
                self._anchor = (frame.t, now)
        self.on_frame(frame)
        return frame

    def reopen(self) -> bool:
        self._anchor = None
        return self.inner.reopen()

    def close(self) -> None:
        self.inner.close()


class FrameMailbox:
    """Holds only the newest display frame; ``put`` returns True when the GUI should be told (latest wins).

    The GUI is signalled once per ``take``: frames put while a signal is pending replace the waiting frame
    silently, so a busy GUI never accumulates queued frames (counted in ``dropped``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._pending = False
        self.put_count = 0
        self.dropped = 0

    def put(self, frame: Frame) -> bool:
        with self._lock:
            self.put_count += 1
            if self._pending:
                self.dropped += 1
            self._frame = frame
            notify = not self._pending
            self._pending = True
            return notify

    def take(self) -> Frame | None:
        with self._lock:
            self._pending = False
            frame, self._frame = self._frame, None
            return frame


def source_label(spec: str | int) -> str:
    """A short human label for a source spec ("camera 0", "demo.mp4", "folder faces/")."""
    if isinstance(spec, int):
        return f"camera {spec}"
    p = Path(spec)
    if p.is_dir():
        return f"folder {p.name}/"
    return p.name or str(spec)


def list_cameras(max_index: int = 8) -> list[int]:
    """Camera indices that look present, without opening them (opening a camera can take seconds).

    Linux: the ``/dev/videoN`` nodes (V4L2 exposes metadata nodes too; those fail later to open and the UI
    falls back to the demo with a message). Elsewhere nothing can be listed cheaply, so index 0 is offered.
    """
    if sys.platform.startswith("linux"):
        found = []
        for name in os.listdir("/dev") if os.path.isdir("/dev") else ():
            if name.startswith("video") and name[5:].isdigit() and int(name[5:]) < max_index:
                found.append(int(name[5:]))
        return sorted(found)
    return [0]
