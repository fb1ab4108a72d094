"""The video view: the newest frame, aspect kept, with face overlays painted from result data.

Nothing is burned into the frame's pixels: boxes, verdict words, score bars and track ids are drawn with
QPainter at paint time from the newest ``FrameResult``, scaled from frame pixels to the widget. That keeps
snapshots of the raw frame clean and lets the overlays follow the newest result while frames keep coming
at camera rate.
"""
from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..types import FrameResult, TrackResult
from .style import VERDICT_WORDS, verdict_color

log = logging.getLogger(__name__)


def bgr_to_qimage(frame: np.ndarray) -> QImage:
    """Wrap an H x W x 3 uint8 BGR frame as a QImage without copying (the caller keeps ``frame`` alive)."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 BGR frame, got shape {frame.shape} dtype {frame.dtype}")
    if not frame.flags["C_CONTIGUOUS"]:
        frame = np.ascontiguousarray(frame)
    h, w, _ = frame.shape
    return QImage(frame.data, w, h, frame.strides[0], QImage.Format.Format_BGR888)


class VideoView(QWidget):
    """Paints the newest frame (aspect kept, letterboxed) and the newest result's overlays on top of it.

    ``set_frame`` and ``set_result`` only store references and schedule a repaint (Qt merges repaints), so
    a burst of frames costs one paint. Clicking a face emits ``track_clicked(track_id)``.
    """

    track_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None, *, show_details: bool = True):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._frame: np.ndarray | None = None
        self._frame_t: float | None = None
        self.stale_after_s = 0.5  # overlays of an older result are drawn faded: the face may have moved
        self._image: QImage | None = None
        self._result: FrameResult | None = None
        self._selected: int | None = None
        self._placeholder = "Starting…"
        self._show_details = show_details  # kiosk: boxes only, no numbers
        self.paint_count = 0  # paints done (tests and the fps readout use it)
        self.overlay_count = 0  # face overlays drawn in the last paint

    # ----------------------------------------------------------------- data in
    def set_frame(self, frame: np.ndarray | None, t: float | None = None) -> None:
        """Show ``frame`` (BGR uint8, taken at source time ``t``) at the next paint; None shows the placeholder."""
        self._frame = frame
        self._frame_t = t
        self._image = None if frame is None else bgr_to_qimage(frame)
        self.update()

    def overlay_lag(self) -> float:
        """Source seconds between the shown frame and the result whose overlays are drawn on it (0 if unknown)."""
        if self._result is None or self._frame_t is None:
            return 0.0
        return max(0.0, self._frame_t - self._result.t)

    def set_result(self, result: FrameResult | None) -> None:
        """Draw this result's tracks over whatever frame is newest (boxes are in frame pixels)."""
        self._result = result
        self.update()

    def set_selected(self, track_id: int | None) -> None:
        self._selected = track_id
        self.update()

    def set_placeholder(self, text: str) -> None:
        """Text shown when there is no frame (starting, no camera, error)."""
        self._placeholder = text
        self.update()

    @property
    def frame(self) -> np.ndarray | None:
        return self._frame

    @property
    def result(self) -> FrameResult | None:
        return self._result

    def sizeHint(self) -> QSize:
        return QSize(960, 540)

    # ----------------------------------------------------------------- geometry
    def image_rect(self) -> QRectF:
        """Where the frame lands in widget coordinates: scaled to fit, aspect kept, centred."""
        if self._image is None:
            return QRectF()
        fw, fh = self._image.width(), self._image.height()
        scale = min(self.width() / fw, self.height() / fh)
        w, h = fw * scale, fh * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def track_rect(self, track: TrackResult) -> QRectF:
        """A track's box mapped from frame pixels into widget coordinates."""
        target = self.image_rect()
        if self._image is None or target.isEmpty():
            return QRectF()
        s = target.width() / self._image.width()
        b = track.box
        return QRectF(target.left() + b.x * s, target.top() + b.y * s, b.w * s, b.h * s)

    def track_at(self, pos: QPointF) -> int | None:
        """The id of the smallest face box under ``pos`` (widget coordinates), or None."""
        if self._result is None:
            return None
        hits = [(self.track_rect(t).width() * self.track_rect(t).height(), t.track_id)
                for t in self._result.tracks if self.track_rect(t).contains(pos)]
        return min(hits)[1] if hits else None

    def mousePressEvent(self, event: QMouseEvent) -> None:
        tid = self.track_at(event.position())
        if tid is not None:
            self.track_clicked.emit(tid)
        super().mousePressEvent(event)

    # ----------------------------------------------------------------- painting
    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(16, 18, 22))
        self.overlay_count = 0
        if self._image is None:
            p.setPen(QColor(200, 205, 210))
            f = QFont(self.font())
            f.setPointSizeF(max(12.0, self.height() / 24))
            p.setFont(f)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
            p.end()
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(self.image_rect(), self._image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self._result is not None:
            if self.overlay_lag() > self.stale_after_s:
                p.setOpacity(0.4)  # a slow model: these boxes are where the faces were, not where they are
            for track in self._result.tracks:
                self._paint_track(p, track)
                self.overlay_count += 1
        p.end()
        self.paint_count += 1

    def _paint_track(self, p: QPainter, track: TrackResult) -> None:
        r = self.track_rect(track)
        if r.isEmpty():
            return
        color = verdict_color(track.verdict)
        selected = track.track_id == self._selected
        pen = QPen(color, 5.0 if selected else 3.0)
        if not track.quality_ok:
            pen.setStyle(Qt.PenStyle.DashLine)  # too small / blurred: shown, not counted as evidence
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(r)

        # Label above the box: verdict word and track id, white on the verdict colour.
        f = QFont(self.font())
        f.setBold(True)
        f.setPointSizeF(max(9.0, min(18.0, r.width() / 11)))
        p.setFont(f)
        word = VERDICT_WORDS.get(track.verdict, track.verdict.upper())
        label = f"{word}  #{track.track_id}" if self._show_details else word
        fm = p.fontMetrics()
        lw, lh = fm.horizontalAdvance(label) + 12, fm.height() + 4
        ly = r.top() - lh if r.top() - lh >= 0 else r.top()
        label_rect = QRectF(r.left() - pen.widthF() / 2, ly, lw, lh)
        p.fillRect(label_rect, color)
        p.setPen(QColor(255, 255, 255))
        p.drawText(label_rect, Qt.AlignmentFlag.AlignCenter, label)
        if not self._show_details:
            return

        # Smoothed P(attack) as a bar under the box, with its value; empty frame before any evidence.
        bh = max(8.0, min(16.0, r.height() / 14))
        bar = QRectF(r.left(), r.bottom() + 4, r.width(), bh)
        p.setPen(QPen(QColor(235, 235, 235), 1.0))
        p.setBrush(QColor(0, 0, 0, 150))
        p.drawRect(bar)
        if track.smoothed is not None:
            s = float(np.clip(track.smoothed, 0.0, 1.0))
            p.fillRect(QRectF(bar.left(), bar.top(), bar.width() * s, bar.height()), color)
            text = f"P(attack) {s:.2f}"
        else:
            text = "collecting evidence"
        f.setPointSizeF(max(8.0, bh * 0.7))
        f.setBold(False)
        p.setFont(f)
        p.setPen(QColor(255, 255, 255))
        p.drawText(QRectF(bar.left(), bar.bottom() + 1, max(bar.width(), 140), bh * 1.6),
                   Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, text)
