"""The bridge between the engine and the window: a worker QObject in a QThread, and its GUI-side controller.

Threads (style.md item 9: the GUI thread only paints):

- **capture** (``LatestFrameReader``'s thread): reads the source. Files and image folders are paced at their
  own frame rate (``PacedTap``), cameras come at camera rate. Every frame is handed to the display mailbox
  *and* kept as the reader's newest frame for scoring.
- **worker** (a ``QThread`` running ``PipelineWorker.run``): loads the scorer, opens the source (falling back
  to the bundled demo when no camera opens), and scores the newest frame with ``Pipeline.process`` whenever
  it is free. A model slower than the camera skips frames (latest wins); it never slows the display.
- **GUI**: on ``frame_ready`` takes the newest display frame from the mailbox and paints it with the newest
  result's overlays. A frame that arrives while the previous one is still unpainted replaces it: no queue.

Stopping is cooperative: ``request_stop`` sets an event the worker checks between frames (and the pacing
sleeps wait on), the worker returns, the thread's event loop quits, and ``WorkerController.shutdown`` waits
with a timeout. Nothing here calls ``QThread.terminate`` or sleeps on the GUI thread.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QDeadlineTimer, QObject, Qt, QThread, QTimer, Signal, Slot

from ..config import DEMO_VIDEO, AppConfig, ConfigError
from ..sources import Frame, FrameSource, LatestFrameReader, SourceError, open_source
from ..types import FrameResult

log = logging.getLogger(__name__)

NO_CAMERA_DEMO = "No camera found: playing the bundled demo"
# How long closing a window waits for the worker (a frame in flight) before the process exits anyway: the
# "closed within 2 s" promise must also hold on a machine loaded enough that one frame takes seconds.
SHUTDOWN_WAIT_S = 0.8


# ----------------------------------------------------------------------------------------------- capture side
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


# ----------------------------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class RunInfo:
    """What the status bar shows about a run: source label, backend, model, model threshold, notices."""

    source: str
    backend: str = "-"
    model: str = "-"
    threshold: float | None = None
    is_demo: bool = False
    notices: tuple[str, ...] = field(default_factory=tuple)


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


class PipelineWorker(QObject):
    """Owns the scorer, the source, the reader and the ``Pipeline``; lives in its own QThread.

    Signals (emitted from the worker or capture thread, delivered queued to the GUI):
    ``frame_ready()``: the mailbox has a newer frame (take it with ``take_frame``);
    ``result_ready(FrameResult)``: a scored frame; ``state_changed(state, message)`` with state one of
    loading | running | no signal | end of stream | error | stopped; ``notice(level, message)`` for
    non-fatal news (demo fallback, backend fallback, recording); ``info_ready(RunInfo)``;
    ``stats(dict)`` about twice a second (capture and scoring frame rates); ``finished()`` last of all.
    """

    frame_ready = Signal()
    result_ready = Signal(object)
    scorecard = Signal(object)
    state_changed = Signal(str, str)
    notice = Signal(str, str)
    info_ready = Signal(object)
    stats = Signal(object)
    finished = Signal()

    def __init__(self, config: AppConfig, *, scorer_factory: Callable[..., Any] | None = None,
                 source_factory: Callable[..., FrameSource] = open_source, demo_video: str | Path = DEMO_VIDEO):
        super().__init__()
        self.config = config
        self._scorer_factory = scorer_factory  # create_scorer(model, backend=...) unless given
        self._open = source_factory  # open_source(spec, loop=..., folder_fps=...); tests put a fake camera here
        self.demo_video = Path(demo_video)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._record_request: tuple[str | None] | None = None  # (path,) to start, (None,) to stop; None: no change
        self.mailbox = FrameMailbox()
        self.pipeline: Any = None  # set in run(); read by tests once the worker is running
        self.scorer: Any = None
        self.reader: LatestFrameReader | None = None
        self.recording_path: Path | None = None
        self.state = "idle"
        self._error_message = ""
        self._writer: Any = None
        self._audit: Any = None  # outputs.AuditLog when config.audit_log is set (kiosks: who was judged what)
        self.results_emitted = 0
        self._face_state = ""
        self.demo_scorecard: Any = None  # demo.DemoScorecard while the demo clip (with its demo.json) plays

    # ------------------------------------------------------------------ thread-safe requests (any thread)
    def request_stop(self) -> None:
        """Ask the run loop to end after the current frame; returns at once."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def update_settings(self, **changes: Any) -> None:
        """Queue AppConfig changes (threshold, smoothing, max_faces, expert_weights...) for the next frame."""
        with self._lock:
            self._pending.update(changes)

    def set_recording(self, path: str | Path | None) -> None:
        """Start writing verdict JSONL to ``path`` (truncated), or stop recording with None."""
        with self._lock:
            self._record_request = (None if path is None else str(path),)

    def take_frame(self) -> Frame | None:
        """The newest display frame (GUI thread, on ``frame_ready``); None if it was already taken."""
        return self.mailbox.take()

    # ------------------------------------------------------------------ the run loop (worker thread)
    @Slot()
    def run(self) -> None:
        """Load, open, loop until stopped, clean up; every failure becomes a state, never an exception."""
        try:
            self._run()
        except Exception as e:  # a bug must still end as a visible state, and the thread must still quit
            log.exception("worker failed")
            self._set_state("error", f"Unexpected error: {e}")
        finally:
            if self.reader is not None:
                self.reader.stop(timeout=1.0)
            if self.pipeline is not None:
                self.pipeline.close()
            for out in (self._writer, self._audit):
                if out is not None:
                    out.close()
            if self.state not in ("error",):
                self._set_state("stopped", "Stopped")
            self.finished.emit()

    def _run(self) -> None:
        c = self.config
        notices: list[str] = []
        # 1. The source first, so the picture appears while the model loads.
        self._set_state("loading", "Opening the source…")
        source, spec, is_demo = self._open_source(notices)
        if source is None or self._stop.is_set():
            if source is not None:
                source.close()
            return
        label = source_label(spec) + (" (demo)" if is_demo else "")
        self.info_ready.emit(RunInfo(source=label, is_demo=is_demo, notices=tuple(notices)))
        tap = PacedTap(source, self._on_frame, self._stop)
        self.reader = LatestFrameReader(tap, backoff_s=c.reopen_backoff_s, backoff_max_s=c.reopen_backoff_max_s,
                                        no_signal_after_s=c.no_signal_after_s).start()

        # 2. The scorer and the pipeline (torch and mediapipe load here, off the GUI thread).
        self._set_state("loading", "Loading the model…")
        scorer, error = self._load_scorer()
        if self._stop.is_set():
            return
        if scorer is not None and getattr(scorer, "notice", ""):
            notices.append(scorer.notice)
            # "auto chose X" is news; a backend asked for by name that could not start is a fallback
            fallback = c.backend != "auto"  # models.runtime sets a named backend's notice only on a fallback
            self.notice.emit("warning" if fallback else "info", scorer.notice)
            (log.warning if fallback else log.info)("%s", scorer.notice)
        if scorer is not None:
            try:
                with self._lock:
                    pending, self._pending = self._pending, {}
                cfg = c.replace(**pending) if pending else c
                self.pipeline = _make_pipeline(cfg, scorer)
                self.config = cfg
            except (ConfigError, FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
                log.error("cannot start the face detector: %s", e)
                error = f"Face detector could not start: {e}."
        self.info_ready.emit(RunInfo(
            source=label,
            backend=getattr(scorer, "backend_name", "none") if scorer else "none",
            model=_model_label(scorer, c.model) if scorer else "not loaded",
            threshold=getattr(scorer, "threshold", None) if scorer else None,
            is_demo=is_demo, notices=tuple(notices)))
        if c.audit_log and not error:
            from ..outputs import AuditLog
            try:
                self._audit = AuditLog(c.audit_log, save_crops=c.save_crops, crops_dir=c.crops_dir,
                                       retention=c.crops_retention)
                log.info("audit log: %s", c.audit_log)
            except OSError as e:
                log.error("cannot write the audit log %s: %s", c.audit_log, e)
                self.notice.emit("error", f"Cannot write the audit log {c.audit_log}: {e}")
        if error:
            self._error_message = error + " Showing the video without verdicts."
            self._set_state("error", self._error_message)
        else:
            if is_demo and not self._start_demo(spec):
                return
            self._set_state("running", "")
        self._loop(self.pipeline is not None and error is None)

    def _start_demo(self, spec: str | int) -> bool:
        """The model is ready: play the demo clip from its first frame (it ran on while the model loaded, so the
        first verdict would land on a later segment), and keep its ground-truth scorecard when it has one.
        False (an error state set) when the clip cannot be opened again."""
        from ..demo import DemoScorecard

        c = self.config
        old = self.reader
        if old is not None:
            if old.stop(timeout=1.0):
                old.source.close()
            else:  # blocked in a read: it ends by itself after it; its capture is not closed under it
                log.warning("the demo's first reader did not stop within 1 s; starting the clip again anyway")
        try:
            source = self._open(spec, loop=True, folder_fps=c.folder_fps)
        except SourceError as e:  # the file went away while the model loaded
            log.error("cannot restart the demo clip: %s", e)
            self._set_state("error", str(e))
            self.reader = None
            return False
        tap = PacedTap(source, self._on_frame, self._stop)
        self.reader = LatestFrameReader(tap, backoff_s=c.reopen_backoff_s, backoff_max_s=c.reopen_backoff_max_s,
                                        no_signal_after_s=c.no_signal_after_s).start()
        log.info("demo restarted from the beginning: the model is ready")
        truth = Path(str(spec)).with_suffix(".json")
        if truth.is_file():
            try:
                self.demo_scorecard = DemoScorecard.load(truth)
            except ValueError as e:
                log.warning("%s: no demo scorecard", e)
        return True

    def _load_scorer(self) -> tuple[Any, str | None]:
        c = self.config
        factory = self._scorer_factory
        if factory is None:
            from ..scorer import create_scorer as factory  # torch import: only in the worker thread
        try:
            scorer = factory(c.model, backend=c.backend)
        except FileNotFoundError as e:
            what = "the bundled model" if not c.model else "the model file"
            msg = f"Cannot load {what}: {e}. Choose a model file (Model…)."
            log.error("%s", msg)
            return None, msg
        except Exception as e:  # CheckpointError (ValueError), a backend that cannot start, a corrupt header
            msg = f"Cannot load the model {c.model or '(bundled)'}: {e}. Choose another model file (Model…)."
            log.error("%s", msg)
            return None, msg
        self.scorer = scorer
        log.info("scorer %s, input %s px, threshold %.3f", scorer.backend_name, getattr(scorer, "input_size", "?"),
                 getattr(scorer, "threshold", float("nan")))
        return scorer, None

    def _open_source(self, notices: list[str]) -> tuple[FrameSource | None, str | int, bool]:
        c = self.config
        spec = c.source_spec
        is_demo = c.source is None and c.demo
        try:
            return self._open(spec, loop=c.loop or is_demo, folder_fps=c.folder_fps), spec, is_demo
        except SourceError as e:
            if not isinstance(spec, int):
                log.error("%s", e)
                self._set_state("error", f"{e}")
                return None, spec, False
            if c.kiosk:
                return self._wait_for_camera(spec, e), spec, False
            log.warning("%s; falling back to the bundled demo %s", e, self.demo_video)
        # A camera that cannot be opened: the bundled demo, looping, says so.
        try:
            src = self._open(str(self.demo_video), loop=True, folder_fps=c.folder_fps)
        except SourceError as e:
            msg = (f"No camera found, and the bundled demo video is missing ({self.demo_video}). "
                   f"Connect a camera or open a video file.")
            log.error("%s (%s)", msg, e)
            self._set_state("error", msg)
            return None, spec, False
        notices.append(NO_CAMERA_DEMO)
        self.notice.emit("warning", NO_CAMERA_DEMO)
        log.warning("%s (%s)", NO_CAMERA_DEMO, self.demo_video)
        return src, str(self.demo_video), True

    def _wait_for_camera(self, spec: int, error: Exception) -> FrameSource | None:
        """Kiosk: a missing camera is not replaced by the demo; retry with back-off until it opens or stop."""
        c = self.config
        wait = c.reopen_backoff_s
        log.warning("%s; retrying every %.1f-%.1f s", error, c.reopen_backoff_s, c.reopen_backoff_max_s)
        self._set_state("no signal", "Camera unavailable: reconnecting…")
        while not self._stop.wait(wait):
            try:
                source = self._open(spec, loop=False, folder_fps=c.folder_fps)
            except SourceError:
                wait = min(wait * 2.0, c.reopen_backoff_max_s)
                continue
            log.info("camera %r opened", spec)
            return source
        return None

    def _on_frame(self, frame: Frame) -> None:
        # capture thread: store and tell the GUI only if it has taken the previous frame
        if self.mailbox.put(frame):
            self.frame_ready.emit()

    def _loop(self, scoring: bool) -> None:
        assert self.reader is not None
        reader = self.reader
        last_status = "ok"
        failures = 0
        t_stats = time.monotonic()
        n_scored = 0
        n_put = self.mailbox.put_count
        while not self._stop.is_set():
            self._apply_requests()
            now = time.monotonic()
            if now - t_stats >= 0.5:
                dt = now - t_stats
                self.stats.emit({"capture_fps": (self.mailbox.put_count - n_put) / dt, "scored_fps": n_scored / dt,
                                 "display_dropped": self.mailbox.dropped, "capture_dropped": reader.frames_dropped})
                t_stats, n_scored, n_put = now, 0, self.mailbox.put_count
            frame = reader.latest(timeout=0.05) if scoring else None
            if frame is None:
                if not scoring:
                    self._stop.wait(0.05)
                status = reader.status
                if status in ("end of stream", "stopped"):
                    self._stop.wait(0.1)  # nothing more will come; idle until stopped
                if status != last_status and status in ("no signal", "end of stream"):
                    message = ("Camera signal lost: reconnecting…" if status == "no signal"
                               else "End of the video")
                    log.warning("%s (%s)", message, self.config.source_spec)
                    self._set_state(status, message)
                    last_status = status
                elif status == "ok" and last_status != "ok":
                    log.info("signal back from %r", reader.source.spec)
                    self._set_state("running" if scoring else "error", "" if scoring else self._error_message)
                    last_status = "ok"
                continue
            if last_status != "ok":
                self._set_state("running", "")
                last_status = "ok"
            try:
                result = self.pipeline.process(frame.image, frame.t, frame.index)
                failures = 0
            except Exception as e:  # one bad frame is logged and skipped; a persistent failure stops scoring
                failures += 1
                log.exception("processing frame %d failed", frame.index)
                if failures >= 5:
                    self._set_state("error", f"Scoring failed repeatedly: {e}. Showing the video without verdicts.")
                    scoring = False
                continue
            n_scored += 1
            self._record(result)
            self._audit_record(result)
            self._log_face_state(result)
            self.results_emitted += 1
            self.result_ready.emit(result)
            if self.demo_scorecard is not None:
                playing = self.demo_scorecard.add(result)
                self.scorecard.emit({"segment": None if playing is None else playing.segment,
                                     "card": self.demo_scorecard.to_dict()})

    def _apply_requests(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            record, self._record_request = self._record_request, None
        if pending:
            try:
                if self.pipeline is not None:
                    self.config = self.pipeline.update_settings(**pending)
                else:
                    self.config = self.config.replace(**pending)
                log.info("settings: %s", ", ".join(f"{k}={v}" for k, v in sorted(pending.items())))
            except ConfigError as e:
                log.warning("setting rejected: %s", e)
                self.notice.emit("warning", f"Setting rejected: {e}")
        if record is not None:
            self._set_recording(record[0])

    def _set_recording(self, path: str | None) -> None:
        from ..outputs import JsonlWriter
        old = self._writer
        if old is not None:
            old.close()
            log.info("recording stopped: %s (%d lines)", old.path, old.lines)
            self.notice.emit("info", f"Recording saved: {old.path} ({old.lines} frames)")
        self._writer = None
        self.recording_path = None
        if path is None:
            return
        try:
            self._writer = JsonlWriter(path)
        except OSError as e:
            log.error("%s", e)
            self.notice.emit("error", f"Cannot record: {e}")
            return
        self.recording_path = Path(path)
        log.info("recording verdicts to %s", path)
        self.notice.emit("info", f"Recording verdicts to {path}")

    def _record(self, result: FrameResult) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            writer.write(result)
        except OSError as e:
            log.error("recording to %s failed: %s", writer.path, e)
            self.notice.emit("error", f"Recording stopped: {e}")
            writer.close()
            self._writer = None

    def _audit_record(self, result: FrameResult) -> None:
        if self._audit is None:
            return
        try:
            self._audit.record(result, self.pipeline.last_crops)
            for tid in self.pipeline.ended_tracks:
                self._audit.forget(tid)
        except OSError as e:
            log.error("audit log %s failed: %s; audit stopped", self._audit.path, e)
            self.notice.emit("error", f"Audit log stopped: {e}")
            self._audit.close()
            self._audit = None

    def _log_face_state(self, result: FrameResult) -> None:
        """One log line when the face situation changes (no face / faces / too many), not one per frame."""
        if not result.tracks:
            state = "no face"
        elif result.dropped_faces:
            state = "too many faces"
        else:
            state = "faces"
        if state != self._face_state:
            if state == "no face":
                log.info("no face in view")
            elif state == "too many faces":
                log.warning("too many faces: %d beyond max_faces=%d not scored", result.dropped_faces,
                            self.config.max_faces)
            else:
                log.info("%d face(s) in view", len(result.tracks))
            self._face_state = state

    def _set_state(self, state: str, message: str) -> None:
        self.state = state
        self.state_changed.emit(state, message)


def _model_label(scorer: Any, configured: str | None) -> str:
    path = getattr(scorer, "model_path", None) or configured
    return Path(path).name if path else "bundled model"


def _make_pipeline(config: AppConfig, scorer: Any) -> Any:
    from ..pipeline import Pipeline  # mediapipe import: only in the worker thread
    return Pipeline(config, scorer)


# ----------------------------------------------------------------------------------------------- GUI side
_ALIVE: dict[int, tuple[QThread, "PipelineWorker"]] = {}  # started and not yet seen finished


class WorkerController(QObject):
    """Starts, restarts and stops ``PipelineWorker`` threads for the window (lives in the GUI thread).

    It re-emits the current worker's signals, so the window connects once. ``restart`` never blocks: the old
    worker is asked to stop and the new one starts when the old thread has finished. ``shutdown`` is the only
    blocking call (closing the window), and it waits at most ``timeout_s``.
    """

    frame_ready = Signal()
    result_ready = Signal(object)
    scorecard = Signal(object)
    state_changed = Signal(str, str)
    notice = Signal(str, str)
    info_ready = Signal(object)
    stats = Signal(object)
    stopped = Signal()

    _FORWARDED = ("frame_ready", "result_ready", "scorecard", "state_changed", "notice", "info_ready", "stats")

    def __init__(self, parent: QObject | None = None, *, scorer_factory: Callable[..., Any] | None = None,
                 source_factory: Callable[..., FrameSource] = open_source, demo_video: str | Path = DEMO_VIDEO):
        super().__init__(parent)
        self._source_factory = source_factory
        self.worker: PipelineWorker | None = None
        self.thread: QThread | None = None
        self._retired: list[tuple[QThread, PipelineWorker]] = []  # stopping; kept referenced until finished
        self._next: AppConfig | None = None
        self._scorer_factory = scorer_factory
        self.demo_video = demo_video
        self.settings: dict[str, Any] = {}  # live setting changes, re-applied to every new worker
        self.recording: str | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    @property
    def idle(self) -> bool:
        """No worker running and none still stopping (every worker thread has finished)."""
        return self.worker is None and not self._retired

    def start(self, config: AppConfig) -> None:
        """Start a worker for ``config`` (stopping the current one first, without blocking)."""
        if self.worker is not None:
            self._next = config
            self._retire()
            return
        worker = PipelineWorker(config, scorer_factory=self._scorer_factory, source_factory=self._source_factory,
                                demo_video=self.demo_video)
        if self.settings:
            worker.update_settings(**self.settings)
        if self.recording:
            worker.set_recording(self.recording)
        # The thread belongs to the application (C++ side) and the pair is kept in _ALIVE until it has
        # finished: a window destroyed early must never let Python delete a running QThread (Qt aborts) or
        # a worker whose run() is still executing. The controller's end also asks the worker to stop.
        thread = QThread(QCoreApplication.instance())
        thread.setObjectName("pipeline-worker")
        _ALIVE[id(thread)] = (thread, worker)
        self.destroyed.connect(worker._stop.set)
        worker.moveToThread(thread)
        for name in self._FORWARDED:
            getattr(worker, name).connect(getattr(self, name))
        thread.started.connect(worker.run)
        # direct: QThread.quit is thread-safe, and a queued call would wait for a GUI thread blocked in shutdown()
        worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        self.worker, self.thread = worker, thread
        thread.start()
        log.info("pipeline worker started (source %r)", config.source_spec)

    def stop(self) -> None:
        """Ask the current worker to stop (returns at once; ``stopped`` is emitted when its thread ended)."""
        self._next = None
        self._retire()

    def _retire(self) -> None:
        if self.worker is None or self.thread is None:
            return
        worker, thread = self.worker, self.thread
        for name in self._FORWARDED:  # a stopping worker must not overwrite the next one's state
            try:
                getattr(worker, name).disconnect(getattr(self, name))
            except (RuntimeError, TypeError):
                pass
        worker.request_stop()
        self._retired.append((thread, worker))
        self.worker = self.thread = None

    @Slot()
    def _on_thread_finished(self) -> None:
        still = []
        for thread, worker in self._retired:
            if thread.isFinished():
                _ALIVE.pop(id(thread), None)
                worker.deleteLater()
                thread.deleteLater()
            else:
                still.append((thread, worker))
        self._retired = still
        if still:
            # QThread.finished is emitted just *before* the thread ends, so a queued slot can run while
            # isFinished() is still False and no further signal will come: look again shortly.
            QTimer.singleShot(20, self._on_thread_finished)
        if self.worker is not None and self.thread is not None and self.thread.isFinished():
            # the current worker ended on its own (e.g. an error before the loop): forget it
            _ALIVE.pop(id(self.thread), None)
            self.worker.deleteLater()
            self.thread.deleteLater()
            self.worker = self.thread = None
        if self._next is not None and self.worker is None and not self._retired:
            config, self._next = self._next, None
            self.start(config)
        elif self.worker is None and not self._retired:
            self.stopped.emit()

    def update_settings(self, **changes: Any) -> None:
        """Apply setting changes to the running worker now and to every later one."""
        self.settings.update(changes)
        if self.worker is not None:
            self.worker.update_settings(**changes)

    def reset_settings(self) -> None:
        self.settings.clear()

    def set_recording(self, path: str | None) -> None:
        self.recording = path
        if self.worker is not None:
            self.worker.set_recording(path)

    def take_frame(self) -> Frame | None:
        return self.worker.take_frame() if self.worker is not None else None

    def shutdown(self, timeout_s: float = 1.5) -> bool:
        """Stop every worker and wait for their threads, at most ``timeout_s`` in all; True if all ended."""
        self._next = None
        self._retire()
        deadline = time.monotonic() + timeout_s
        ok = True
        for thread, _worker in list(self._retired):
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not thread.wait(QDeadlineTimer(left_ms)):
                log.warning("pipeline worker did not stop within %.1f s", timeout_s)
                ok = False
        if ok:
            for thread, _worker in self._retired:
                _ALIVE.pop(id(thread), None)
            self._retired.clear()
        return ok
