"""The operator's and presenter's window: video with overlays, verdict banner, score plot, expert routing,
controls and a status bar. It only paints and forwards requests; the worker thread does all the work.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import cv2
from PySide6.QtCore import QObject, QRunnable, QStandardPaths, Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QImage, QKeySequence
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QMainWindow, QPushButton, QScrollArea, QSlider, QSpinBox,
                               QSplitter, QToolBar, QVBoxLayout, QWidget)

from ..config import BACKENDS, DEMO_VIDEO, AppConfig, ConfigError
from ..sources import list_cameras
from ..types import FrameResult, Notice
from .banner import Message, MessageStrip, VerdictBanner, describe, main_track
from .experts_panel import ExpertsPanel
from .plots import ScorePlot
from .settings import SettingsStore
from .video_view import VideoView
from .worker import SHUTDOWN_WAIT_S, RunInfo, WorkerController

log = logging.getLogger(__name__)

# Settings the window can change while running (AppConfig keys) and that are remembered between runs.
LIVE_KEYS = ("threshold", "hysteresis", "ema_tau_s", "min_evidence_frames", "max_faces", "expert_weights")
RESTART_KEYS = ("source", "model", "backend")
_DEFAULTS = AppConfig()


def merge_remembered(config: AppConfig, remembered: dict[str, Any]) -> AppConfig:
    """``config`` with remembered values for the keys the command line / config file left at their default.

    A value given explicitly (anything that differs from AppConfig's default) wins for this run; an
    unusable remembered value is skipped with a log line, never an error.
    """
    changes: dict[str, Any] = {}
    for key in LIVE_KEYS + RESTART_KEYS:
        if key not in remembered or getattr(config, key) != getattr(_DEFAULTS, key):
            continue
        if key == "source" and config.demo:
            continue  # --demo always plays the demo
        value = remembered[key]
        if key in ("source", "model") and isinstance(value, str) and not Path(value).exists():
            log.info("remembered %s %s no longer exists; not used", key, value)
            continue
        changes[key] = value
    out = config
    for key, value in changes.items():
        try:
            out = out.replace(**{key: value})
        except (ConfigError, TypeError) as e:
            log.warning("ignoring remembered setting %s=%r: %s", key, value, e)
    return out


class _SnapshotJob(QRunnable):
    """Writes a snapshot (overlay PNG, raw frame PNG, result JSON) off the GUI thread.

    ``signals`` must be a child of a GUI-thread object (see ``MainWindow.snapshot``): the pool deletes the job,
    and so drops its Python references, on the pool thread, and a QObject of the job's own would be destroyed
    there, off its thread and before its queued ``done`` had been delivered.
    """

    class Signals(QObject):
        done = Signal(str, str)  # level, message

    def __init__(self, base: Path, overlay: QImage, frame: Any, record: dict | None, signals: QObject):
        super().__init__()
        self.base, self.overlay, self.frame, self.record = base, overlay, frame, record
        self.signals = signals

    def run(self) -> None:
        try:
            self.base.parent.mkdir(parents=True, exist_ok=True)
            ok = self.overlay.save(str(self.base.with_suffix(".png")))
            if self.frame is not None:
                ok &= bool(cv2.imwrite(str(self.base.with_name(self.base.name + "_raw.png")), self.frame))
            if self.record is not None:
                self.base.with_suffix(".json").write_text(json.dumps(self.record, indent=1))
            if not ok:
                raise OSError(f"could not write images under {self.base.parent}")
            log.info("snapshot saved: %s.png", self.base)
            self.signals.done.emit("info", f"Snapshot saved: {self.base}.png")
        except OSError as e:
            log.error("snapshot failed: %s", e)
            self.signals.done.emit("error", f"Snapshot failed: {e}")


def _default_dir(kind: str) -> Path:
    loc = QStandardPaths.StandardLocation.PicturesLocation if kind == "snapshots" else \
        QStandardPaths.StandardLocation.DocumentsLocation
    base = QStandardPaths.writableLocation(loc) or str(Path.home())
    return Path(base) / "liveness" / kind


def format_scorecard(update: dict) -> str:
    """One rich-text line: "Ground truth: 2/4 print attack (attack) | scorecard live 100 % · print 49 % ..."."""
    seg = update.get("segment")
    truth = (f"Ground truth: <b>{seg.caption or seg.name}</b> ({seg.label})" if seg is not None
             else "Ground truth: -")
    parts = []
    for row in update["card"]["segments"]:
        pct = "-" if row["agreement"] is None else f"{100 * row['agreement']:.0f} %"
        name = f"<b>{row['name']}</b>" if seg is not None and row["name"] == seg.name else row["name"]
        parts.append(f"{name} {pct}")
    overall = update["card"]["agreement"]
    total = "" if overall is None else f" (overall {100 * overall:.0f} %)"
    return f"{truth} &nbsp;|&nbsp; verdicts agreeing: {' · '.join(parts)}{total}"


class MainWindow(QMainWindow):
    """The desktop window (see the module docstring). ``autostart`` starts the pipeline at once."""

    def __init__(self, config: AppConfig, *, settings: SettingsStore | None = None,
                 controller: WorkerController | None = None, autostart: bool = True):
        super().__init__()
        # What the command line / config file asked for (Reset returns here). The window shows the MoE routing
        # by default (a second pass of the image tower per frame); unticking it is remembered.
        self.base_config = config if config.expert_weights else config.replace(expert_weights=True)
        config = self.base_config
        self.store = settings or SettingsStore()
        remembered = self.store.values()
        self.config = merge_remembered(config, remembered)
        self.controller = controller or WorkerController(self)
        if self.controller.parent() is None:
            self.controller.setParent(self)
        self.info = RunInfo(source="-")
        self.last_result: FrameResult | None = None
        self.selected: int | None = None  # a clicked face; None follows the main (largest) face
        self._pinned = False
        self.frames_shown = 0
        self._shown_at: deque[float] = deque(maxlen=600)  # arrival times, for the fps readout
        self._scored_at: deque[float] = deque(maxlen=600)
        self._state = "idle"
        self.shutdown_ok = True
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self.snapshot_dir = Path(remembered.get("snapshot_dir") or _default_dir("snapshots"))
        self.record_dir = Path(remembered.get("record_dir") or _default_dir("recordings"))

        self.setWindowTitle("Face liveness: La-SoftMoE CLIP")
        self._build_ui()
        self._connect()
        self._load_controls(self.config)
        geometry = self.store.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(500)
        self._status_timer.timeout.connect(self._refresh_status)
        self._status_timer.start()
        if autostart:
            self.start()

    # ------------------------------------------------------------------ layout
    def _build_ui(self) -> None:
        self.banner = VerdictBanner()
        self.messages = MessageStrip()
        self.video_view = VideoView()
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.setSpacing(0)
        lv.addWidget(self.banner)
        self.demo_card = QLabel()  # the demo clip's ground truth next to the verdict (only while it plays)
        self.demo_card.setObjectName("demoScorecard")
        self.demo_card.setWordWrap(True)
        self.demo_card.setContentsMargins(8, 4, 8, 4)
        self.demo_card.setVisible(False)
        lv.addWidget(self.demo_card)
        lv.addWidget(self.messages)
        lv.addWidget(self.video_view, 1)

        self.score_plot = ScorePlot()
        self.experts_panel = ExpertsPanel()
        side = QWidget()
        sv = QVBoxLayout(side)
        header = QLabel("<b>Selected face</b> (click a face to select it)")
        header.setWordWrap(True)
        sv.addWidget(header)
        sv.addWidget(self.score_plot)
        self.experts_check = QCheckBox("Show expert routing")
        self.experts_check.setToolTip("Shows the MoE routing, read from the same model call that scores the face")
        sv.addWidget(self.experts_check)
        sv.addWidget(self.experts_panel)
        sv.addWidget(self._build_decision_group())
        sv.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(300)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([900, 360])
        self.setCentralWidget(splitter)
        self._build_toolbar()
        self._build_status_bar()

    def _build_decision_group(self) -> QGroupBox:
        box = QGroupBox("Decision (applies at once)")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setDecimals(2)
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        form.addRow("Threshold", row)
        self.threshold_note = QLabel("")
        self.threshold_note.setWordWrap(True)
        self.threshold_note.setStyleSheet("color: gray;")
        form.addRow("", self.threshold_note)
        self.hysteresis_spin = QDoubleSpinBox()
        self.hysteresis_spin.setRange(0.0, 0.5)
        self.hysteresis_spin.setSingleStep(0.01)
        self.hysteresis_spin.setToolTip("Half-width of the band a score must cross to flip a verdict")
        form.addRow("Hysteresis ±", self.hysteresis_spin)
        self.tau_spin = QDoubleSpinBox()
        self.tau_spin.setRange(0.0, 10.0)
        self.tau_spin.setSingleStep(0.1)
        self.tau_spin.setSuffix(" s")
        self.tau_spin.setToolTip("EMA time constant: 0 = no smoothing")
        form.addRow("Smoothing", self.tau_spin)
        self.evidence_spin = QSpinBox()
        self.evidence_spin.setRange(1, 100)
        self.evidence_spin.setToolTip("Good-quality frames a face needs before its first verdict")
        form.addRow("Min. evidence", self.evidence_spin)
        self.max_faces_spin = QSpinBox()
        self.max_faces_spin.setRange(1, 64)
        form.addRow("Max. faces", self.max_faces_spin)
        self.reset_button = QPushButton("Reset settings")
        self.reset_button.setToolTip("Forget remembered settings and return to the command line / config file")
        form.addRow(self.reset_button)
        return box

    def _build_toolbar(self) -> None:
        tb = QToolBar("Controls")
        tb.setObjectName("controls")
        tb.setMovable(False)
        self.addToolBar(tb)
        self.toolbar = tb
        tb.addWidget(QLabel(" Source "))
        self.source_combo = QComboBox()
        self.source_combo.setMinimumContentsLength(18)
        tb.addWidget(self.source_combo)
        self.open_video_action = QAction("Open video…", self)
        self.open_folder_action = QAction("Open folder…", self)
        tb.addAction(self.open_video_action)
        tb.addAction(self.open_folder_action)
        tb.addSeparator()
        self.start_action = QAction("Stop", self)
        tb.addAction(self.start_action)
        self.quit_action = QAction("Quit", self)
        self.quit_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
        self.quit_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.addAction(self.quit_action)  # Ctrl+Q, without a button
        tb.addSeparator()
        self.model_action = QAction("Model…", self)
        tb.addAction(self.model_action)
        tb.addWidget(QLabel(" Backend "))
        self.backend_combo = QComboBox()
        self.backend_combo.addItems(list(BACKENDS))
        tb.addWidget(self.backend_combo)
        tb.addSeparator()
        self.record_action = QAction("Record JSONL", self)
        self.record_action.setCheckable(True)
        self.snapshot_action = QAction("Snapshot", self)
        self.snapshot_action.setShortcut(QKeySequence("Ctrl+S"))
        tb.addAction(self.record_action)
        tb.addAction(self.snapshot_action)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_source = QLabel("source: -")
        self.status_backend = QLabel("backend: -")
        self.status_model = QLabel("model: -")
        self.status_fps = QLabel("fps: -")
        self.status_latency = QLabel("latency: -")
        for w in (self.status_source, self.status_backend, self.status_model, self.status_fps):
            sb.addPermanentWidget(w)
        sb.addWidget(self.status_latency, 1)

    def _connect(self) -> None:
        c = self.controller
        c.frame_ready.connect(self._on_frame_ready)
        c.result_ready.connect(self._on_result)
        c.scorecard.connect(self._on_scorecard)
        c.state_changed.connect(self._on_state)
        c.notice.connect(self._on_notice)
        c.info_ready.connect(self._on_info)
        c.stats.connect(self._on_stats)
        c.stopped.connect(self._on_stopped)
        self.video_view.track_clicked.connect(self.select_track)
        self.threshold_slider.valueChanged.connect(lambda v: self.threshold_spin.setValue(v / 100.0))
        self.threshold_spin.valueChanged.connect(self._on_threshold)
        self.hysteresis_spin.valueChanged.connect(lambda v: self.set_setting("hysteresis", round(v, 4)))
        self.tau_spin.valueChanged.connect(lambda v: self.set_setting("ema_tau_s", round(v, 4)))
        self.evidence_spin.valueChanged.connect(lambda v: self.set_setting("min_evidence_frames", int(v)))
        self.max_faces_spin.valueChanged.connect(lambda v: self.set_setting("max_faces", int(v)))
        self.experts_check.toggled.connect(lambda on: self.set_setting("expert_weights", bool(on)))
        self.reset_button.clicked.connect(self.reset_settings)
        self.source_combo.activated.connect(self._on_source_chosen)
        self.open_video_action.triggered.connect(self._ask_video)
        self.open_folder_action.triggered.connect(self._ask_folder)
        self.start_action.triggered.connect(self.toggle_running)
        self.model_action.triggered.connect(self._ask_model)
        self.backend_combo.activated.connect(lambda i: self.set_backend(self.backend_combo.itemText(i)))
        self.record_action.toggled.connect(self._on_record_toggled)
        self.snapshot_action.triggered.connect(lambda: self.snapshot())
        self.quit_action.triggered.connect(self.close)

    def _load_controls(self, config: AppConfig) -> None:
        """Show ``config`` in the controls without emitting changes."""
        widgets = (self.threshold_slider, self.threshold_spin, self.hysteresis_spin, self.tau_spin,
                   self.evidence_spin, self.max_faces_spin, self.experts_check, self.backend_combo)
        for w in widgets:
            w.blockSignals(True)
        thr = config.threshold if config.threshold is not None else (self.info.threshold or 0.5)
        self.threshold_spin.setValue(thr)
        self.threshold_slider.setValue(round(thr * 100))
        self.hysteresis_spin.setValue(config.hysteresis)
        self.tau_spin.setValue(config.ema_tau_s)
        self.evidence_spin.setValue(config.min_evidence_frames)
        self.max_faces_spin.setValue(config.max_faces)
        self.experts_check.setChecked(config.expert_weights)
        self.backend_combo.setCurrentText(config.backend)
        for w in widgets:
            w.blockSignals(False)
        self._update_threshold_note()
        self._update_plot_thresholds()
        self._fill_sources()
        self.experts_panel.setVisible(config.expert_weights)
        if not config.expert_weights:
            self.experts_panel.set_message("Tick 'Show expert routing' to see the MoE experts at work.")

    def _fill_sources(self) -> None:
        combo = self.source_combo
        combo.blockSignals(True)
        combo.clear()
        for idx in list_cameras():
            combo.addItem(f"Camera {idx}", idx)
        if DEMO_VIDEO.is_file() or self.config.demo:
            combo.addItem("Demo video", str(DEMO_VIDEO))
        spec = self.config.source_spec
        if self.info.is_demo:
            spec = str(DEMO_VIDEO)
        if combo.findData(spec) < 0:
            label = f"Camera {spec}" if isinstance(spec, int) else Path(str(spec)).name
            combo.addItem(label, spec)
        combo.insertSeparator(combo.count())
        combo.addItem("Video file…", "__video__")
        combo.addItem("Image folder…", "__folder__")
        combo.setCurrentIndex(combo.findData(spec))
        combo.blockSignals(False)

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Start (or restart) the pipeline with the current configuration."""
        self.last_result = None
        self.score_plot.clear()
        self.video_view.set_result(None)
        for topic in ("faces", "state", "source", "backend"):  # the new run reports its own
            self.messages.set(topic, None)
        self.controller.settings = {k: getattr(self.config, k) for k in LIVE_KEYS}
        self.controller.start(self.config)
        self._state = "starting"
        self.start_action.setText("Stop")

    def stop(self) -> None:
        self.controller.stop()
        self.start_action.setText("Start")
        self.banner.set_message(Message("Stopped", "info"))
        self._state = "stopped"

    def toggle_running(self) -> None:
        if self.controller.worker is not None:
            self.stop()
        else:
            self.start()

    def set_source(self, spec: str | int) -> None:
        """Switch to a camera index, video file or image folder (restarts the pipeline)."""
        self.config = self.config.replace(source=spec, demo=False)
        if isinstance(spec, str) and Path(spec) == DEMO_VIDEO:
            self.config = self.config.replace(source=None, demo=True)
        self.store.update({"source": spec})
        self.messages.set("source", None)
        self._fill_sources()
        self.start()

    def set_model(self, path: str | None) -> None:
        """Use another checkpoint (None: the bundled one); restarts the pipeline."""
        self.config = self.config.replace(model=path)
        self.store.update({"model": path})
        self.start()

    def set_backend(self, backend: str) -> None:
        if backend == self.config.backend:
            return
        self.config = self.config.replace(backend=backend)
        self.store.update({"backend": backend})
        self.start()

    def set_setting(self, key: str, value: Any) -> None:
        """Change a live setting (threshold, smoothing...): the pipeline applies it from the next frame."""
        try:
            self.config = self.config.replace(**{key: value})
        except ConfigError as e:
            self.messages.set("settings", str(e), "warning")
            return
        self.messages.set("settings", None)
        self.controller.update_settings(**{key: value})
        self.store.update({key: value})
        if key in ("threshold", "hysteresis"):
            self._update_plot_thresholds()
            self._update_threshold_note()
        if key == "expert_weights":
            self.experts_panel.setVisible(bool(value))
            if value:
                self.experts_panel.set_message("Waiting for the next scored face…")

    def _on_threshold(self, value: float) -> None:
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(round(value * 100))
        self.threshold_slider.blockSignals(False)
        self.set_setting("threshold", round(float(value), 4))

    def _update_threshold_note(self) -> None:
        model_thr = self.info.threshold
        own = self.config.threshold is None
        text = "" if model_thr is None else f"model's validated threshold: {model_thr:.2f}"
        if own and model_thr is not None:
            text += " (in use)"
        self.threshold_note.setText(text)

    def _update_plot_thresholds(self) -> None:
        thr = self.config.threshold if self.config.threshold is not None else (self.info.threshold or 0.5)
        h = self.config.hysteresis
        self.score_plot.set_thresholds(*sorted({max(0.0, thr - h), thr, min(1.0, thr + h)}))

    def reset_settings(self) -> None:
        """Forget remembered settings and return every control to the command line / config file values."""
        self.store.reset()
        old = self.config
        self.config = self.base_config
        self.controller.reset_settings()
        self._load_controls(self.config)
        changes = {k: getattr(self.config, k) for k in LIVE_KEYS if getattr(old, k) != getattr(self.config, k)}
        if changes:
            self.controller.update_settings(**changes)
        self.messages.set("settings", "Settings reset to the command line / config file values", "info",
                          expire_ms=6000)
        if any(getattr(old, k) != getattr(self.config, k) for k in RESTART_KEYS + ("demo",)):
            self.start()
        log.info("settings reset")

    # ------------------------------------------------------------------ worker signals
    @Slot()
    def _on_frame_ready(self) -> None:
        frame = self.controller.take_frame()
        if frame is None:
            return
        self.video_view.set_frame(frame.image, frame.t)
        self.frames_shown += 1
        self._shown_at.append(time.monotonic())

    @Slot(object)
    def _on_result(self, result: FrameResult) -> None:
        self.last_result = result
        self._scored_at.append(time.monotonic())
        if not getattr(self, "_first_verdict_marked", False) and any(t.verdict != "uncertain"
                                                                     for t in result.tracks):
            self._first_verdict_marked = True  # launch-to-first-verdict trace (liveness_app/startup.py)
            from .. import startup
            if startup.mark_once("first verdict on screen"):
                logging.getLogger(__name__).info("%s", startup.summary())
        self.video_view.set_result(result)
        self.score_plot.add_result(result)
        ids = {t.track_id for t in result.tracks}
        if self._pinned and self.selected not in ids:
            self._pinned = False  # the clicked face left: follow the main face again
        if not self._pinned:
            main = main_track(result)
            self.selected = main.track_id if main else self.selected
        self.video_view.set_selected(self.selected)
        self.score_plot.set_track(self.selected)
        if self.config.expert_weights:
            sel = next((t for t in result.tracks if t.track_id == self.selected), None)
            if sel is not None and sel.expert_weights is not None:
                self.experts_panel.set_weights(sel.expert_weights, sel.track_id, sel.token_experts)
            elif sel is not None and self.experts_panel.weights is None:
                self.experts_panel.set_weights((), sel.track_id)  # no MoE layers in this model
        self.banner.set_message(describe(result))
        if not result.tracks:
            self.messages.set("faces", "No face in view", "info")
        elif result.dropped_faces:
            self.messages.set("faces", f"Too many faces: {result.dropped_faces} more than max. faces "
                                       f"({self.config.max_faces}) are not scored", "warning")
        else:
            self.messages.set("faces", None)
        if result.timings_ms:
            order = ("detect", "track", "crop", "score", "smooth")
            self.status_latency.setText("latency ms: " + "  ".join(
                f"{k} {result.timings_ms[k]:.1f}" for k in order if k in result.timings_ms))

    @Slot(object)
    def _on_scorecard(self, update: dict) -> None:
        """The demo's running scorecard: the segment playing, its true label, and agreement per segment so far."""
        self.demo_card.setText(format_scorecard(update))
        self.demo_card.setVisible(True)

    @Slot(str, str)
    def _on_state(self, state: str, message: str) -> None:
        self._state = state
        level = {"error": "error", "no signal": "warning", "end of stream": "info"}.get(state)
        self.messages.set("state", message if level else None, level or "info")
        if state == "loading":
            self.banner.set_message(Message(message or "Loading…", "info"))
            if self.video_view.frame is None:
                self.video_view.set_placeholder(message or "Loading…")
        elif state == "error":  # the banner names the state; the message strip under it says why and what to do
            self.banner.set_message(Message("NO VERDICTS", "error"))
            if self.video_view.frame is None:
                self.video_view.set_placeholder(message)
        elif state == "no signal":
            self.banner.set_message(Message("NO SIGNAL", "warning"))
        elif state == "running":
            self.banner.set_message(describe(self.last_result))

    @Slot(object)
    def _on_notice(self, notice: Notice) -> None:
        if notice.topic == "backend":
            self.status_backend.setToolTip(notice.text)
            if notice.level == "info":
                return  # "auto chose X": the status bar says which; only a fallback is worth a message
        self.messages.set(notice.topic, notice.text, notice.level, expire_ms=10000 if notice.transient else None)

    @Slot(object)
    def _on_info(self, info: RunInfo) -> None:
        self.info = info
        self.status_source.setText(f"source: {info.source}")
        self.status_backend.setText(f"backend: {info.backend}")
        self.status_model.setText(f"model: {info.model}")
        if self.config.threshold is None and info.threshold is not None:
            self._load_controls(self.config)  # show the model's threshold in the controls
        self._update_threshold_note()
        self._update_plot_thresholds()
        self._fill_sources()

    @Slot(object)
    def _on_stats(self, stats: dict) -> None:
        self.capture_stats = stats  # capture rate and dropped-frame counters (shown in the fps tooltip)

    @Slot()
    def _on_stopped(self) -> None:
        if self.controller.worker is None:
            self.start_action.setText("Start")

    @staticmethod
    def _rate(times: deque[float], now: float, window_s: float = 3.0) -> float:
        while times and now - times[0] > window_s:
            times.popleft()
        return len(times) / window_s

    def _refresh_status(self) -> None:
        now = time.monotonic()
        self.status_fps.setText(f"display {self._rate(self._shown_at, now):.1f} fps · "
                                f"scored {self._rate(self._scored_at, now):.1f} fps")
        stats = getattr(self, "capture_stats", None)
        if stats:
            self.status_fps.setToolTip(f"capture {stats.get('capture_fps', 0):.1f} fps; frames not shown "
                                       f"{stats.get('display_dropped', 0)}, "
                                       f"not scored {stats.get('capture_dropped', 0)}")

    # ------------------------------------------------------------------ user actions
    def select_track(self, track_id: int) -> None:
        """Show this face's score history and expert routing (sticks until the face leaves)."""
        self.selected = track_id
        self._pinned = True
        self.video_view.set_selected(track_id)
        self.score_plot.set_track(track_id)
        self.experts_panel.set_weights(None, track_id)
        if self.config.expert_weights:
            self.experts_panel.set_message("Waiting for the next scored frame of this face…")

    def _on_source_chosen(self, index: int) -> None:
        data = self.source_combo.itemData(index)
        if data == "__video__":
            self._ask_video()
        elif data == "__folder__":
            self._ask_folder()
        elif data is not None and data != self.config.source_spec:
            self.set_source(data)

    def _ask_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video file", str(Path.home()),
                                              "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v);;All files (*)")
        if path:
            self.set_source(path)
        else:
            self._fill_sources()

    def _ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images", str(Path.home()))
        if path:
            self.set_source(path)
        else:
            self._fill_sources()

    def _ask_model(self) -> None:
        start = str(Path(self.config.model).parent) if self.config.model else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model checkpoint", start,
                                              "Checkpoints (*.safetensors);;All files (*)")
        if path:
            self.set_model(path)

    def _on_record_toggled(self, on: bool) -> None:
        if not on:
            self.stop_recording()
            return
        default = self.record_dir / f"verdicts-{_dt.datetime.now():%Y%m%d-%H%M%S}.jsonl"
        path, _ = QFileDialog.getSaveFileName(self, "Record verdicts to", str(default), "JSON lines (*.jsonl)")
        if not path:
            self.record_action.blockSignals(True)
            self.record_action.setChecked(False)
            self.record_action.blockSignals(False)
            return
        self.start_recording(path)

    def start_recording(self, path: str | Path) -> None:
        """Write one verdict JSONL line per scored frame to ``path`` until ``stop_recording``."""
        path = Path(path)
        self.record_dir = path.parent
        self.store.update({"record_dir": str(path.parent)})
        self.controller.set_recording(str(path))
        self.record_action.blockSignals(True)
        self.record_action.setChecked(True)
        self.record_action.blockSignals(False)
        self.messages.set("record", f"Recording verdicts to {path}", "info")

    def stop_recording(self) -> None:
        self.controller.set_recording(None)
        self.record_action.blockSignals(True)
        self.record_action.setChecked(False)
        self.record_action.blockSignals(False)

    def snapshot(self, base: str | Path | None = None) -> Path:
        """Save the view as shown (overlays included), the raw frame and the result record; returns the base
        path (files are written off the GUI thread; a message says when they are there)."""
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
        base = Path(base) if base else self.snapshot_dir / f"liveness-{stamp}"
        overlay = self.video_view.grab().toImage()
        frame = self.video_view.frame
        record = self.last_result.to_record() if self.last_result is not None else None
        signals = _SnapshotJob.Signals(self)  # owned by the window: lives and is deleted on the GUI thread
        signals.done.connect(self._on_snapshot_done)  # a slot of the window: queued to the GUI thread
        signals.done.connect(signals.deleteLater)  # queued too, after the message
        job = _SnapshotJob(base, overlay, None if frame is None else frame.copy(), record, signals)
        self._pool.start(job)
        return base

    @Slot(str, str)
    def _on_snapshot_done(self, level: str, message: str) -> None:
        self.messages.set("snapshot", message, level, expire_ms=8000 if level == "info" else None)

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: QCloseEvent) -> None:
        log.info("window closing: stopping the pipeline")
        self.store.set_geometry(self.saveGeometry())
        self.store.sync()
        self._status_timer.stop()
        self.shutdown_ok = self.controller.shutdown(timeout_s=SHUTDOWN_WAIT_S)
        self._pool.waitForDone(300)
        event.accept()

    def request_exit(self) -> None:
        """Close the window (SIGTERM / SIGINT path)."""
        self.close()
