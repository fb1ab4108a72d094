"""The bridge between the engine and the window: a worker QObject in a QThread, and its GUI-side controller.

Threads (docs/architecture.md, rule 5: the GUI thread only paints):

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QCoreApplication, QDeadlineTimer, QObject, Qt, QThread, QTimer, Signal, Slot

from ..config import DEMO_VIDEO, AppConfig, ConfigError
from ..session import Session, open_audit_log, start_reader
from ..sources import (Frame, FrameMailbox, FrameSource, LatestFrameReader, PacedTap, SourceError, open_source,
                       source_label)
from ..types import FrameResult, Notice, Scorer

if TYPE_CHECKING:
    from ..pipeline import Pipeline

log = logging.getLogger(__name__)

NO_CAMERA_DEMO = "No camera found: playing the bundled demo"
# How long closing a window waits for the worker (a frame in flight) before the process exits anyway: the
# "closed within 2 s" promise must also hold on a machine loaded enough that one frame takes seconds.
SHUTDOWN_WAIT_S = 0.8


# ----------------------------------------------------------------------------------------------- worker side
class RunSignals(QObject):
    """The signals of a run, declared once: the worker emits them and the controller re-emits them."""

    frame_ready = Signal()
    result_ready = Signal(object)  # FrameResult
    scorecard = Signal(object)  # {"segment": ..., "card": DemoScorecard.to_dict()}
    state_changed = Signal(str, str)  # state, message
    notice = Signal(object)  # types.Notice
    info_ready = Signal(object)  # RunInfo
    stats = Signal(object)  # dict of frame rates and drop counts

    FORWARDED = ("frame_ready", "result_ready", "scorecard", "state_changed", "notice", "info_ready", "stats")


@dataclass(frozen=True)
class RunInfo:
    """What the status bar shows about a run: source label, backend, model, model threshold, notices."""

    source: str
    backend: str = "-"
    model: str = "-"
    threshold: float | None = None
    is_demo: bool = False
    notices: tuple[str, ...] = field(default_factory=tuple)


class PipelineWorker(RunSignals):
    """Drives a ``Session`` (scorer, source, reader, ``Pipeline``, writers) from its own QThread.

    Signals (emitted from the worker or capture thread, delivered queued to the GUI):
    ``frame_ready()``: the mailbox has a newer frame (take it with ``take_frame``);
    ``result_ready(FrameResult)``: a scored frame; ``state_changed(state, message)`` with state one of
    loading | running | no signal | end of stream | error | stopped; ``notice(Notice)`` for non-fatal news
    (demo fallback, backend fallback, recording, audit log, a rejected setting); ``info_ready(RunInfo)``;
    ``stats(dict)`` about twice a second (capture and scoring frame rates); ``finished()`` last of all.
    """

    finished = Signal()

    def __init__(self, config: AppConfig, *, create_scorer: Callable[..., Scorer] | None = None,
                 source_factory: Callable[..., FrameSource] = open_source, demo_video: str | Path = DEMO_VIDEO):
        super().__init__()
        self.config = config
        self._create_scorer = create_scorer  # scorer.create_scorer(model, backend=...) unless given
        self._open = source_factory  # open_source(spec, loop=..., folder_fps=...); tests put a fake camera here
        self.demo_video = Path(demo_video)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._record_request: tuple[str | None] | None = None  # (path,) to start, (None,) to stop; None: no change
        self.mailbox = FrameMailbox()
        self.pipeline: Pipeline | None = None  # set in run(); read by tests once the worker is running
        self.scorer: Scorer | None = None
        self.reader: LatestFrameReader | None = None
        self.session: Session | None = None
        self.state = "idle"
        self._error_message = ""
        self._face_state = ""
        self._stats_at = (time.monotonic(), 0, 0)  # (time, frames put, frames scored) of the last stats

    @property
    def demo_scorecard(self) -> Any:
        """demo.DemoScorecard while the demo clip (with its demo.json) plays, else None."""
        return self.session.scorecard if self.session is not None else None

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

    # ------------------------------------------------------------------ the run (worker thread)
    @Slot()
    def run(self) -> None:
        """Load, open, loop until stopped, clean up; every failure becomes a state, never an exception."""
        try:
            self._run()
        except Exception as e:  # a bug must still end as a visible state, and the thread must still quit
            log.exception("worker failed")
            self._set_state("error", f"Unexpected error: {e}")
        finally:
            # the capture too (a camera stays busy until it is released); not under a reader still blocked in
            # a read (closing a capture mid-read is the driver's undefined case): that one goes with the reader
            if self.reader is not None and self.reader.stop(timeout=1.0):
                self.reader.source.close()
            if self.session is not None:
                self.session.close()
            elif self.pipeline is not None:
                self.pipeline.close()
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
        self.reader = self._start_reader(source)

        # 2. The scorer and the pipeline (torch and mediapipe load here, off the GUI thread).
        self._set_state("loading", "Loading the model…")
        scorer, error = self._load_scorer()
        if self._stop.is_set():
            return
        if scorer is not None and scorer.notice:
            notices.append(scorer.notice)
            # "auto chose X" is news; a backend asked for by name that could not start is a fallback
            fallback = c.backend != "auto"  # models.deploy.runtime sets a named backend's notice only on a fallback
            self.notice.emit(Notice("backend", "warning" if fallback else "info", scorer.notice))
            (log.warning if fallback else log.info)("%s", scorer.notice)
        if scorer is not None:
            try:
                with self._lock:
                    pending, self._pending = self._pending, {}
                cfg = c.replace(**pending) if pending else c
                from ..pipeline import Pipeline  # mediapipe import: only in the worker thread
                self.pipeline = Pipeline(cfg, scorer)
                self.config = cfg
            except (ConfigError, FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
                log.error("cannot start the face detector: %s", e)
                error = f"Face detector could not start: {e}."
        self.info_ready.emit(RunInfo(
            source=label,
            backend=scorer.backend_name if scorer else "none",
            model=_model_label(scorer, c.model) if scorer else "not loaded",
            threshold=scorer.threshold if scorer else None,
            is_demo=is_demo, notices=tuple(notices)))
        session = self.session = Session(self.config, self.pipeline, on_result=self._on_result,
                                         on_status=self._on_status, on_notice=self.notice.emit)
        if c.audit_log and not error:
            try:
                session.audit = open_audit_log(c)
                log.info("audit log: %s", c.audit_log)
            except OSError as e:
                log.error("cannot write the audit log %s: %s", c.audit_log, e)
                self.notice.emit(Notice("audit", "error", f"Cannot write the audit log {c.audit_log}: {e}"))
        if error:
            self._error_message = error + " Showing the video without verdicts."
            self._set_state("error", self._error_message)
        else:
            if is_demo and not self._start_demo(spec):
                return
            self._set_state("running", "")
        session.run(self.reader, self._stop, stop_at_end=False, max_failures=5, poll_s=0.05,
                    between_frames=self._between_frames)

    def _start_reader(self, source: FrameSource) -> LatestFrameReader:
        return start_reader(PacedTap(source, self._on_frame, self._stop), self.config)

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
        self.reader = self._start_reader(source)
        log.info("demo restarted from the beginning: the model is ready")
        truth = Path(str(spec)).with_suffix(".json")
        if truth.is_file() and self.session is not None:
            try:
                self.session.scorecard = DemoScorecard.load(truth)
            except ValueError as e:
                log.warning("%s: no demo scorecard", e)
        return True

    def _load_scorer(self) -> tuple[Scorer | None, str | None]:
        c = self.config
        factory = self._create_scorer
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
        log.info("scorer %s, input %s px, threshold %.3f", scorer.backend_name, scorer.input_size, scorer.threshold)
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
        self.notice.emit(Notice("source", "warning", NO_CAMERA_DEMO))
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

    def _between_frames(self) -> None:
        """Worker thread, at the top of every pass of the run loop: queued requests, then stats twice a second."""
        self._apply_requests()
        now = time.monotonic()
        t, put, scored = self._stats_at
        if now - t >= 0.5 and self.session is not None and self.reader is not None:
            dt = now - t
            self.stats.emit({"capture_fps": (self.mailbox.put_count - put) / dt,
                             "scored_fps": (self.session.scored - scored) / dt,
                             "display_dropped": self.mailbox.dropped, "capture_dropped": self.reader.frames_dropped})
            self._stats_at = (now, self.mailbox.put_count, self.session.scored)

    def _on_result(self, result: FrameResult) -> None:
        self._log_face_state(result)
        self.result_ready.emit(result)
        session = self.session
        if session is not None and session.scorecard is not None:
            playing = session.playing
            self.scorecard.emit({"segment": None if playing is None else playing.segment,
                                 "card": session.scorecard.to_dict()})

    def _on_status(self, status: str, detail: str) -> None:
        scoring = self.session is not None and self.session.scoring
        if status == "no signal":
            self._set_state(status, "Camera signal lost: reconnecting…")
        elif status == "end of stream":
            self._set_state(status, "End of the video")
        elif status == "error":
            self._error_message = f"Scoring failed repeatedly: {detail}. Showing the video without verdicts."
            self._set_state("error", self._error_message)
        elif status == "ok":
            self._set_state("running" if scoring else "error", "" if scoring else self._error_message)

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
                self.notice.emit(Notice("settings", "warning", f"Setting rejected: {e}"))
        if record is not None and self.session is not None:
            self.session.set_recording(record[0])

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


def _model_label(scorer: Scorer, configured: str | None) -> str:
    path = scorer.model_path or configured
    return Path(path).name if path else "bundled model"


# ----------------------------------------------------------------------------------------------- GUI side
def thread_ended(thread: QThread) -> bool:
    """True once ``thread`` has really ended, so that deleting its QThread is safe and loses nothing.

    Not ``isFinished()``: with Qt 6 that can already be True while the thread is still emitting ``finished``.
    Deleting the QThread then (a ``deleteLater`` from the first queued receiver) loses the queued call of a
    Python callable connected to ``finished`` later (PySide's hidden receiver for it goes with its sender): in
    a bare start / stop loop under load, 5 of 300 such calls never ran with ``isFinished()``, 0 of 300 with
    ``wait(0)`` (docs/stability.md, "Stop under load"). ``wait(0)`` is True only after the thread's last step.
    """
    return thread.wait(0)


_ALIVE: dict[int, tuple[QThread, "PipelineWorker"]] = {}  # started and not yet seen finished


class WorkerController(RunSignals):
    """Starts, restarts and stops ``PipelineWorker`` threads for the window (lives in the GUI thread).

    It re-emits the current worker's ``RunSignals``, so the window connects once. ``restart`` never blocks: the old
    worker is asked to stop and the new one starts when the old thread has finished. ``shutdown`` is the only
    blocking call (closing the window), and it waits at most ``timeout_s``.
    """

    stopped = Signal()

    def __init__(self, parent: QObject | None = None, *, create_scorer: Callable[..., Scorer] | None = None,
                 source_factory: Callable[..., FrameSource] = open_source, demo_video: str | Path = DEMO_VIDEO):
        super().__init__(parent)
        self._source_factory = source_factory
        self.worker: PipelineWorker | None = None
        self.thread: QThread | None = None
        self._retired: list[tuple[QThread, PipelineWorker]] = []  # stopping; kept referenced until finished
        self._next: AppConfig | None = None
        self._create_scorer = create_scorer
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
        worker = PipelineWorker(config, create_scorer=self._create_scorer, source_factory=self._source_factory,
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
        for name in self.FORWARDED:
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
        for name in self.FORWARDED:  # a stopping worker must not overwrite the next one's state
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
            if thread_ended(thread):
                _ALIVE.pop(id(thread), None)
                worker.deleteLater()
                thread.deleteLater()
            else:
                still.append((thread, worker))
        self._retired = still
        if still:
            # QThread.finished is emitted by the thread itself just before it ends, so this queued slot can run
            # before it has ended, and no further signal will come: look again shortly.
            QTimer.singleShot(20, self._on_thread_finished)
        if self.worker is not None and self.thread is not None and thread_ended(self.thread):
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
