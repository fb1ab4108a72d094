"""Live plot of one face's raw and smoothed P(attack) over the last seconds, painted with QPainter.

The history of every track is kept (bounded by ``window_s``) so that selecting another face shows its
past at once. Time on the x axis is the source timestamp of the results, so a video plays back on its own
clock and a replay of a JSONL file would draw the same plot.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..types import FrameResult
from .style import PANEL_TEXT, panel_painter, verdict_color


@dataclass(frozen=True)
class ScorePoint:
    t: float  # source seconds
    raw: float | None  # this frame's P(attack), None when not scored
    smoothed: float | None  # temporal estimate, None before evidence
    verdict: str


class ScoreHistory:
    """Per-track (t, raw, smoothed, verdict) points of the last ``window_s`` seconds (pure, no painting)."""

    def __init__(self, window_s: float = 10.0, max_tracks: int = 32):
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self.max_tracks = max_tracks
        self._tracks: dict[int, deque[ScorePoint]] = {}
        self.latest_t: float | None = None

    def add(self, result: FrameResult) -> None:
        """Append every track of ``result`` and drop points (and tracks) older than the window."""
        if self.latest_t is not None and result.t < self.latest_t:
            self.clear()  # the source restarted (a looping video): a fresh time axis
        self.latest_t = result.t
        for tr in result.tracks:
            pts = self._tracks.setdefault(tr.track_id, deque())
            pts.append(ScorePoint(result.t, tr.raw_score, tr.smoothed, tr.verdict))
        oldest = result.t - self.window_s
        for tid in list(self._tracks):
            pts = self._tracks[tid]
            while pts and pts[0].t < oldest:
                pts.popleft()
            if not pts:
                del self._tracks[tid]
        while len(self._tracks) > self.max_tracks:  # keep the most recently seen tracks
            del self._tracks[min(self._tracks, key=lambda k: self._tracks[k][-1].t)]

    def points(self, track_id: int | None) -> list[ScorePoint]:
        return list(self._tracks.get(track_id, ())) if track_id is not None else []

    def track_ids(self) -> list[int]:
        return sorted(self._tracks)

    def clear(self) -> None:
        self._tracks.clear()
        self.latest_t = None


class ScorePlot(QWidget):
    """Raw (thin, grey dots) and smoothed (thick, coloured by verdict) P(attack) of the selected face.

    Horizontal lines mark the decision thresholds; ``set_thresholds`` moves them as the user edits them.
    """

    def __init__(self, parent: QWidget | None = None, window_s: float = 10.0):
        super().__init__(parent)
        self.history = ScoreHistory(window_s)
        self._track: int | None = None
        self._thresholds: tuple[float, ...] = (0.5,)
        self.setMinimumSize(220, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        return QSize(320, 170)

    def add_result(self, result: FrameResult) -> None:
        self.history.add(result)
        self.update()

    def set_track(self, track_id: int | None) -> None:
        self._track = track_id
        self.update()

    @property
    def track(self) -> int | None:
        return self._track

    def set_thresholds(self, *values: float) -> None:
        """Decision lines in P(attack) (e.g. the live and attack thresholds of the hysteresis)."""
        self._thresholds = tuple(float(v) for v in values if v is not None)
        self.update()

    def clear(self) -> None:
        self.history.clear()
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = panel_painter(self)
        fm = p.fontMetrics()
        left, top, right, bottom = fm.horizontalAdvance("1.0") + 10, fm.height() + 6, 8, fm.height() + 6
        area = QRectF(left, top, max(1, self.width() - left - right), max(1, self.height() - top - bottom))
        window = self.history.window_s
        t_end = self.history.latest_t or 0.0

        def xy(t: float, v: float) -> QPointF:
            return QPointF(area.left() + area.width() * (1.0 - (t_end - t) / window),
                           area.bottom() - area.height() * min(max(v, 0.0), 1.0))

        # Frame, y ticks, x ticks (seconds ago).
        p.setPen(QPen(QColor(70, 75, 85), 1))
        p.drawRect(area)
        p.setPen(PANEL_TEXT)
        for v in (0.0, 0.5, 1.0):
            y = xy(t_end, v).y()
            p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:.1f}")
        for s in range(0, int(window) + 1, max(1, int(window) // 5)):
            x = area.left() + area.width() * (1.0 - s / window)
            p.drawText(QRectF(x - 20, area.bottom() + 2, 40, fm.height()), Qt.AlignmentFlag.AlignHCenter,
                       f"-{s}s" if s else "now")
        title = "P(attack), selected face" if self._track is None else f"P(attack), face #{self._track}"
        p.drawText(QRectF(left, 2, area.width(), fm.height()), Qt.AlignmentFlag.AlignLeft, title)
        legend = "· raw   — smoothed"
        show_legend = fm.horizontalAdvance(title) + fm.horizontalAdvance(legend) + 16 < area.width()

        for th in self._thresholds:
            p.setPen(QPen(QColor(200, 200, 200, 140), 1, Qt.PenStyle.DashLine))
            y = xy(t_end, th).y()
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))

        pts = self.history.points(self._track)
        if not pts:
            p.setPen(QColor(150, 155, 165))
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "no face selected" if self._track is None else
                       "waiting for scores")
            p.end()
            return
        p.setClipRect(area)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(190, 190, 200, 170))
        for pt in pts:  # raw scores: one dot per scored frame
            if pt.raw is not None:
                p.drawEllipse(xy(pt.t, pt.raw), 1.8, 1.8)
        # Smoothed score: a line segment per step, coloured by the verdict at that step.
        prev: ScorePoint | None = None
        for pt in pts:
            if pt.smoothed is not None and prev is not None and prev.smoothed is not None:
                p.setPen(QPen(verdict_color(pt.verdict), 2.5))
                p.drawLine(xy(prev.t, prev.smoothed), xy(pt.t, pt.smoothed))
            prev = pt
        p.setClipping(False)
        if show_legend:
            p.setPen(PANEL_TEXT)
            p.drawText(QRectF(left, 2, area.width(), fm.height()), Qt.AlignmentFlag.AlignRight, legend)
        p.end()
