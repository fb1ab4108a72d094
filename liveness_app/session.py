"""One run of the real-time engine, without Qt: frames from a reader -> ``Pipeline`` -> the writers.

``Session`` owns the pipeline and the outputs of a run (verdict JSONL, audit log, run summary, the demo's
scorecard) and the one run loop: take the newest frame, score it, record it, and report each change of the
source's state once ("no signal", "end of stream", back to "ok"). Two thin drivers use it: the headless CLI
(``cli.run_headless``: every frame of a file, the newest of a camera; ends at the end of the stream) and the GUI
worker (``ui.worker.PipelineWorker``: a paced reader, settings and recording requests between frames, Qt
signals in the callbacks; idles at the end of the stream until stopped).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from .config import AppConfig
from .outputs import AuditLog, JsonlWriter, RunSummary
from .sources import Frame, FrameSource, LatestFrameReader
from .types import FrameResult, Notice

if TYPE_CHECKING:  # the pipeline imports OpenCV and mediapipe; the session itself needs neither
    from .demo import DemoScorecard
    from .ops.sdnotify import Watchdog
    from .pipeline import Pipeline

log = logging.getLogger(__name__)


class FrameFeed(Protocol):
    """What the run loop reads: ``sources.LatestFrameReader`` or ``SequentialFeed``."""

    outages: int

    @property
    def status(self) -> str: ...

    def latest(self, timeout: float | None = None) -> Frame | None: ...

    def stop(self, timeout: float = 2.0) -> bool: ...


class SequentialFeed:
    """A file or folder read frame by frame on the caller's thread: no frame is skipped (headless scoring)."""

    outages = 0

    def __init__(self, source: FrameSource):
        self.source = source
        self.status = "ok"

    def latest(self, timeout: float | None = None) -> Frame | None:
        frame = self.source.read()
        if frame is None:
            self.status = "end of stream"
        return frame

    def stop(self, timeout: float = 2.0) -> bool:
        return True


def start_reader(source: FrameSource, config: AppConfig) -> LatestFrameReader:
    """A started ``LatestFrameReader`` over ``source`` with the config's reopen back-off and no-signal time."""
    return LatestFrameReader(source, backoff_s=config.reopen_backoff_s, backoff_max_s=config.reopen_backoff_max_s,
                             no_signal_after_s=config.no_signal_after_s).start()


def open_feed(source: FrameSource, config: AppConfig) -> FrameFeed:
    """Headless: cameras and streams through a capture thread (the newest frame), files and folders frame by frame
    (every frame, in order)."""
    return start_reader(source, config) if source.is_live else SequentialFeed(source)


def open_audit_log(config: AppConfig) -> AuditLog | None:
    """The audit log ``config`` asks for (None without ``audit_log``); OSError when it cannot be written."""
    if not config.audit_log:
        return None
    return AuditLog(config.audit_log, save_crops=config.save_crops, crops_dir=config.crops_dir,
                    retention=config.crops_retention)


class Session:
    """The pipeline and writers of one run, and its loop (see the module docstring).

    ``on_result(result)`` is called after every scored frame is recorded; ``on_status(status, detail)`` once per
    change of the source's state ("no signal", "end of stream", "ok", and "error" with the exception's text when
    scoring failed ``max_failures`` times in a row); ``on_notice(Notice)`` for a writer that failed. Without
    ``on_notice`` a write failure raises OSError (the headless run ends); with it the writer is closed and the run
    goes on. Without a pipeline (or once ``scoring`` is False) the loop only follows the source's state.
    """

    def __init__(self, config: AppConfig, pipeline: "Pipeline | None", *, writer: JsonlWriter | None = None,
                 audit: AuditLog | None = None, summary: RunSummary | None = None,
                 scorecard: "DemoScorecard | None" = None, watchdog: "Watchdog | None" = None, on_result: Callable[[FrameResult], None] | None = None,
                 on_status: Callable[[str, str], None] | None = None,
                 on_notice: Callable[[Notice], None] | None = None):
        self.config = config
        self.pipeline = pipeline
        self.writer, self.audit, self.summary, self.scorecard = writer, audit, summary, scorecard
        self.watchdog = watchdog  # systemd's watchdog: fed per recorded result and per pass waiting on a camera
        self.on_result, self.on_status, self.on_notice = on_result, on_status, on_notice
        self.playing = None  # the demo segment of the latest result (DemoScorecard.add)
        self.scoring = pipeline is not None  # False: the video plays without verdicts
        self.scored = 0  # frames scored by this session
        self.status = "ok"  # the latest reported state of the source
        self._first_verdict_marked = False

    # ------------------------------------------------------------------ one frame
    def record(self, result: FrameResult) -> None:
        """Add ``result`` (a scored frame or a status) to the summary and scorecard, and write it."""
        if self.watchdog is not None:
            self.watchdog.alive()  # a frame (or a no-signal status) went through: the loop is not hung
        if self.summary is not None:
            self.summary.add(result)
        if self.scorecard is not None:
            self.playing = self.scorecard.add(result)
        if result.status != "ok":
            return
        writer = self.writer
        if writer is not None:
            try:
                writer.write(result)
            except OSError as e:
                self._writer_failed("record", f"recording to {writer.path} failed", f"Recording stopped: {e}", e)
                writer.close()
                self.writer = None
        if not self._first_verdict_marked:  # the first verdict is out: the launch-to-first-verdict trace ends
            self._first_verdict_marked = True
            from . import startup
            if startup.mark_once("first verdict"):  # the process's first session only: launch happens once
                log.info("%s", startup.summary())
        audit = self.audit
        if audit is not None and self.pipeline is not None:
            try:
                audit.record(result, self.pipeline.last_crops)
                for tid in self.pipeline.ended_tracks:
                    audit.forget(tid)
            except OSError as e:
                self._writer_failed("audit", f"audit log {audit.path} failed", f"Audit log stopped: {e}", e)
                audit.close()
                self.audit = None

    def _writer_failed(self, topic: str, what: str, text: str, error: OSError) -> None:
        if self.on_notice is None:
            raise error
        log.error("%s: %s", what, error)
        self.on_notice(Notice(topic, "error", text))

    def set_recording(self, path: str | Path | None) -> None:
        """Start writing verdict JSONL to ``path`` (truncated), or stop recording with None; says so in a Notice."""
        notify = self.on_notice or (lambda notice: None)
        old, self.writer = self.writer, None
        if old is not None:
            old.close()
            log.info("recording stopped: %s (%d lines)", old.path, old.lines)
            notify(Notice("record", "info", f"Recording saved: {old.path} ({old.lines} frames)", transient=True))
        if path is None:
            return
        try:
            self.writer = JsonlWriter(path)
        except OSError as e:
            log.error("%s", e)
            notify(Notice("record", "error", f"Cannot record: {e}"))
            return
        log.info("recording verdicts to %s", path)
        notify(Notice("record", "info", f"Recording verdicts to {path}"))

    # ------------------------------------------------------------------ the loop
    def run(self, feed: FrameFeed, stop: threading.Event, *, max_frames: int | None = None,
            stop_at_end: bool = True, max_failures: int = 0, poll_s: float = 0.2,
            between_frames: Callable[[], None] | None = None) -> None:
        """Score the newest frame of ``feed`` until ``stop`` is set, ``max_frames`` were scored or (with
        ``stop_at_end``) the stream ends. ``between_frames`` runs at the top of every pass (the GUI applies its
        requests there). A frame that fails to score raises, unless ``max_failures`` > 0: then it is logged and
        skipped, and that many failures in a row stop scoring (``on_status("error", text)``)."""
        outages = feed.outages
        failures = 0
        while not stop.is_set() and (max_frames is None or self.scored < max_frames):
            if between_frames is not None:
                between_frames()
            frame = feed.latest(timeout=poll_s) if self.scoring else None
            if not self.scoring:
                stop.wait(poll_s)
            lost = feed.outages > outages  # the camera was lost since the last pass (it may be back already)
            outages = feed.outages
            status = feed.status
            if frame is None:
                if self.watchdog is not None and status not in ("end of stream", "stopped"):
                    self.watchdog.alive()  # the loop runs while a camera is away and being reopened
                if status in ("end of stream", "stopped"):
                    if status == "end of stream":
                        self._report("end of stream")
                    if stop_at_end:
                        break
                    stop.wait(0.1)  # nothing more will come; idle until stopped
                elif lost or status == "no signal":  # a read blocked longer than no_signal_after_s counts too
                    self._report("no signal")
                elif status == "ok" and not self.scoring:  # back; while scoring, the next frame says so
                    self._report("ok")
                continue
            if lost:
                self._report("no signal")
            if status == "ok":  # a frame taken after the outage, not the last one from before it
                self._report("ok")
            try:
                result = self.pipeline.process(frame.image, frame.t, frame.index)
                failures = 0
            except Exception as e:
                if not max_failures:
                    raise
                failures += 1
                log.exception("processing frame %d failed", frame.index)
                if failures >= max_failures:
                    self.scoring = False  # persistent: show the video without verdicts
                    self._report("error", str(e))
                continue
            self.scored += 1
            self.record(result)
            if self.on_result is not None:
                self.on_result(result)

    def _report(self, status: str, detail: str = "") -> None:
        if status == self.status:
            return
        self.status = status
        if status == "no signal":
            log.warning("no signal from %r", self.config.source_spec)
            if self.pipeline is not None:
                self.record(self.pipeline.status_result(-1, time.monotonic(), "no signal"))
        elif status == "ok":
            log.info("signal from %r", self.config.source_spec)
        if self.on_status is not None:
            self.on_status(status, detail)

    def close(self) -> None:
        """Close the writers and the pipeline (the feed and the scorer belong to the driver)."""
        for closable in (self.writer, self.audit, self.pipeline):
            if closable is not None:
                closable.close()
        self.writer = self.audit = None
