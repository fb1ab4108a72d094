"""UI building blocks offscreen, without the pipeline: overlays, plot history, banner rules, settings, mailbox."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402

from liveness_app.config import AppConfig  # noqa: E402
from liveness_app.sources import Frame, FrameSource  # noqa: E402
from liveness_app.types import FaceBox, FrameResult, TrackResult  # noqa: E402
from liveness_app.ui.banner import describe, main_track  # noqa: E402
from liveness_app.ui.experts_panel import ExpertsPanel  # noqa: E402
from liveness_app.ui.main_window import merge_remembered  # noqa: E402
from liveness_app.ui.plots import ScoreHistory, ScorePlot  # noqa: E402
from liveness_app.ui.settings import SettingsStore  # noqa: E402
from liveness_app.ui.style import VERDICT_COLORS  # noqa: E402
from liveness_app.ui.video_view import VideoView, bgr_to_qimage  # noqa: E402
from liveness_app.sources import FrameMailbox, PacedTap  # noqa: E402


def _track(tid: int, x: float, y: float, side: float, verdict: str = "live", smoothed: float | None = 0.2,
           quality_ok: bool = True) -> TrackResult:
    return TrackResult(tid, FaceBox(x, y, side, side), smoothed, smoothed, verdict, quality_ok)


def _result(*tracks: TrackResult, t: float = 1.0, dropped: int = 0) -> FrameResult:
    return FrameResult(index=0, t=t, frame=None, tracks=tracks, dropped_faces=dropped)


def test_bgr_to_qimage_keeps_channel_order() -> None:
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[..., 2] = 255  # red in BGR
    img = bgr_to_qimage(frame)
    assert (img.width(), img.height()) == (6, 4)
    assert img.pixelColor(0, 0).red() == 255 and img.pixelColor(0, 0).blue() == 0
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        bgr_to_qimage(np.zeros((4, 6), np.uint8))


def test_video_view_keeps_aspect_and_paints_boxes_from_result(qtbot) -> None:
    view = VideoView()
    qtbot.addWidget(view)
    view.resize(800, 300)  # wider than the 4:3 frame: letterboxed left and right
    frame = np.full((480, 640, 3), 90, np.uint8)
    view.set_frame(frame)
    rect = view.image_rect()
    assert rect.height() == pytest.approx(300) and rect.width() == pytest.approx(400)
    assert rect.left() == pytest.approx(200)
    live = _track(1, 100, 100, 160, "live")
    attack = _track(2, 400, 200, 120, "attack", 0.9)
    view.set_result(_result(live, attack))
    img = view.grab().toImage()
    assert view.overlay_count == 2
    # the frame pixels themselves are untouched (overlays are painted, not burned in)
    assert (frame == 90).all()
    # the left edge of each box is drawn in its verdict colour
    for tr in (live, attack):
        r = view.track_rect(tr)
        c = img.pixelColor(int(round(r.left())), int(r.center().y()))
        want = VERDICT_COLORS[tr.verdict]
        assert abs(c.red() - want.red()) < 40 and abs(c.green() - want.green()) < 40, (tr.verdict, c.name())
    # a result older than the frame (a slow model) is drawn faded: the face may have moved since
    view.set_frame(frame, t=5.0)
    view.set_result(FrameResult(index=0, t=1.0, frame=None, tracks=(live,)))
    assert view.overlay_lag() == pytest.approx(4.0)
    faded = view.grab().toImage().pixelColor(int(round(view.track_rect(live).left())),
                                            int(view.track_rect(live).center().y()))
    assert abs(faded.green() - VERDICT_COLORS["live"].green()) > 20
    view.set_result(_result(live, attack))
    # clicking inside a box selects that face
    hits = []
    view.track_clicked.connect(hits.append)
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.track_rect(attack).center().toPoint())
    assert hits == [2]
    assert view.track_at(QPointF(5, 5)) is None


def test_video_view_placeholder_without_frame(qtbot) -> None:
    view = VideoView()
    qtbot.addWidget(view)
    view.set_placeholder("No camera")
    view.grab()
    assert view.paint_count == 0 and view.overlay_count == 0


def test_score_history_window_and_restart() -> None:
    h = ScoreHistory(window_s=2.0)
    for i in range(50):
        h.add(_result(_track(1, 0, 0, 50, smoothed=i / 50), t=i * 0.1))
    pts = h.points(1)
    assert pts[-1].t == pytest.approx(4.9) and pts[0].t >= 4.9 - 2.0 - 1e-9
    assert len(pts) == 21
    h.add(_result(_track(1, 0, 0, 50), t=0.0))  # a looping video starts over: a fresh axis
    assert len(h.points(1)) == 1
    with pytest.raises(ValueError, match="window_s"):
        ScoreHistory(0)


def test_score_plot_paints_selected_track(qtbot) -> None:
    plot = ScorePlot(window_s=5.0)
    qtbot.addWidget(plot)
    plot.resize(320, 160)
    for i in range(20):
        plot.add_result(_result(_track(3, 0, 0, 50, "attack", 0.9), t=i * 0.1))
    plot.set_track(3)
    plot.set_thresholds(0.45, 0.5, 0.55)
    img = plot.grab().toImage()
    red = VERDICT_COLORS["attack"]
    reds = sum(1 for x in range(0, 320, 2) for y in range(0, 160, 2)
               if abs(img.pixelColor(x, y).red() - red.red()) < 30 and img.pixelColor(x, y).green() < 90)
    assert reds > 5  # the smoothed line is drawn in the attack colour


def test_experts_panel_weights_and_dense_message(qtbot) -> None:
    panel = ExpertsPanel()
    qtbot.addWidget(panel)
    panel.set_weights([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], track_id=5)
    assert panel.weights == ((0.1, 0.2, 0.3, 0.4), (0.25, 0.25, 0.25, 0.25))
    panel.grab()
    assert panel.token_map is None
    # with the per-patch dispatch map: layers x patches x experts -> a g x g map per layer, painted
    tokens = np.zeros((2, 16, 4), np.float32)
    tokens[:, :, 2] = 0.7
    tokens[:, :, [0, 1, 3]] = 0.1
    tokens[1, 5] = (0.05, 0.8, 0.1, 0.05)
    panel.set_weights([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], track_id=5, token_experts=tokens)
    best, share = panel.token_map
    assert best.shape == (2, 4, 4) and best[0].tolist() == [[2] * 4] * 4 and best[1, 1, 1] == 1
    assert share[1, 1, 1] == pytest.approx(0.8)
    panel.resize(360, 170)
    img = panel.grab().toImage()
    assert img.width() == 360
    panel.set_weights([], track_id=5)
    assert "no MoE layers" in panel._message and panel.token_map is None


def test_describe_and_main_track() -> None:
    small, big = _track(1, 0, 0, 40, "attack", 0.9), _track(2, 100, 0, 120, "live", 0.1)
    r = _result(small, big)
    assert main_track(r) is big
    assert describe(r).text == "LIVE" and "face #2" in describe(r).detail
    assert describe(_result()).text == "No face in view"
    assert describe(_result(), kiosk=True).text == "Please look at the camera"
    assert describe(_result(small), kiosk=True).text == "Attack detected"
    assert describe(r, kiosk=True).text == "One person at a time, please"
    assert describe(_result(_track(1, 0, 0, 50, "uncertain", None)), kiosk=True).kind == "uncertain"
    assert "too small" in describe(_result(_track(1, 0, 0, 20, "uncertain", None, quality_ok=False))).detail


def test_settings_store_roundtrip_and_reset(tmp_path) -> None:
    store = SettingsStore(tmp_path / "s.ini")
    store.update({"threshold": 0.37, "source": 2, "model": None, "expert_weights": True})
    again = SettingsStore(tmp_path / "s.ini")
    assert again.values() == {"threshold": 0.37, "source": 2, "model": None, "expert_weights": True}
    again.reset()
    assert SettingsStore(tmp_path / "s.ini").values() == {}


def test_merge_remembered_lets_explicit_values_win(tmp_path) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"x")
    remembered = {"threshold": 0.3, "backend": "cpu", "max_faces": 2, "source": str(clip),
                  "model": str(tmp_path / "gone.safetensors"), "hysteresis": "bad"}
    merged = merge_remembered(AppConfig(), remembered)
    assert (merged.threshold, merged.backend, merged.max_faces, merged.source) == (0.3, "cpu", 2, str(clip))
    assert merged.model is None  # a remembered file that no longer exists is skipped
    assert merged.hysteresis == AppConfig().hysteresis  # an unusable value is skipped, not an error
    explicit = merge_remembered(AppConfig(threshold=0.8, backend="cuda"), remembered)
    assert (explicit.threshold, explicit.backend) == (0.8, "cuda")
    assert merge_remembered(AppConfig(demo=True), remembered).source is None  # --demo always plays the demo


def test_frame_mailbox_latest_wins() -> None:
    box = FrameMailbox()
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), i * 0.1, i) for i in range(3)]
    assert box.put(frames[0]) is True  # the GUI is told once
    assert box.put(frames[1]) is False and box.put(frames[2]) is False  # not again until it takes
    assert box.take().index == 2 and box.dropped == 2
    assert box.take() is None
    assert box.put(frames[0]) is True


class _ListSource(FrameSource):
    def __init__(self, n: int, fps: float):
        self.spec, self.fps, self.is_live = "list", fps, False
        self._frames = [Frame(np.zeros((2, 2, 3), np.uint8), i / fps, i) for i in range(n)]

    def read(self) -> Frame | None:
        return self._frames.pop(0) if self._frames else None


def test_paced_tap_plays_files_at_their_rate_and_aborts() -> None:
    seen: list[int] = []
    stop = threading.Event()
    tap = PacedTap(_ListSource(6, fps=20.0), lambda f: seen.append(f.index), stop)
    t0 = time.monotonic()
    while tap.read() is not None:
        pass
    assert seen == list(range(6))
    assert time.monotonic() - t0 >= 0.2  # 6 frames at 20 fps span 0.25 s of source time, not a burst
    # an abort ends a pacing wait at once: frames 10 s apart are not waited for
    tap = PacedTap(_ListSource(3, fps=0.1), lambda f: None, stop)
    stop.set()
    t0 = time.monotonic()
    while tap.read() is not None:
        pass
    assert time.monotonic() - t0 < 5.0


def test_qt_binding_does_not_drop_references_to_none(qtbot) -> None:
    """PySide6 6.12.0 decrements None's reference count on every void call (setText, drawLine...); on
    Python 3.11 the window then aborts with "none_dealloc" after a minute of painting. requirements.txt
    excludes that release; this catches a binding with the same defect."""
    import sys

    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    qtbot.addWidget(label)
    img = QImage(16, 16, QImage.Format.Format_RGB32)
    p = QPainter(img)
    before = sys.getrefcount(None)
    for _ in range(200):
        label.setText("x")
        p.drawLine(QPointF(1, 1), QPointF(5, 5))
    p.end()
    assert sys.getrefcount(None) - before > -50
