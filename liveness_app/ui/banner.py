"""The big verdict banner and the message strip, and the pure rules that pick what they say.

``main_track`` and ``describe`` decide the words from a ``FrameResult`` (testable without painting); the
widgets only draw them. The same rules drive the main window's banner and the kiosk's single message.
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPaintEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from ..types import FrameResult, TrackResult
from .style import NEUTRAL, verdict_color


def main_track(result: FrameResult | None) -> TrackResult | None:
    """The main face: the largest box of the frame (ties: the lowest track id), or None without faces."""
    if result is None or not result.tracks:
        return None
    return max(result.tracks, key=lambda t: (t.box.area, -t.track_id))


@dataclass(frozen=True)
class Message:
    """One line to show: its text, a verdict or level for the colour, and a smaller detail line."""

    text: str
    kind: str  # live | attack | uncertain | info | warning | error
    detail: str = ""


KIND_COLORS = {"info": QColor(60, 110, 170), "warning": QColor(200, 130, 20), "error": QColor(190, 40, 40)}


def kind_color(kind: str) -> QColor:
    return QColor(KIND_COLORS[kind]) if kind in KIND_COLORS else verdict_color(kind)


def describe(result: FrameResult | None, *, kiosk: bool = False, max_faces: int | None = None) -> Message:
    """What the banner says for a result: the main face's verdict, or why there is none.

    Window wording is technical ("ATTACK, P(attack) 0.91, face #3"); kiosk wording addresses the person in
    front of the camera ("Attack detected", "Please look at the camera").
    """
    if result is None:
        return Message("Starting…" if kiosk else "Waiting for the first scored frame…", "info")
    tr = main_track(result)
    if tr is None:
        return Message("Please look at the camera" if kiosk else "No face in view", "info")
    if kiosk and len(result.tracks) + result.dropped_faces > 1:
        return Message("One person at a time, please", "warning")
    score = "" if tr.smoothed is None else f"P(attack) {tr.smoothed:.2f}"
    if tr.verdict == "live":
        return Message("Live" if kiosk else "LIVE", "live", "" if kiosk else f"{score}, face #{tr.track_id}")
    if tr.verdict == "attack":
        return Message("Attack detected" if kiosk else "ATTACK", "attack",
                       "" if kiosk else f"{score}, face #{tr.track_id}")
    if not tr.quality_ok:
        return Message("Please come closer and hold still" if kiosk else "UNCERTAIN", "uncertain",
                       "" if kiosk else f"face #{tr.track_id}: too small, blurred or cut off")
    return Message("Checking… please hold still" if kiosk else "UNCERTAIN", "uncertain",
                   "" if kiosk else f"collecting evidence, face #{tr.track_id}")


class VerdictBanner(QWidget):
    """A full-width coloured band with one big word and an optional detail line."""

    def __init__(self, parent: QWidget | None = None, *, scale: float = 1.0):
        super().__init__(parent)
        self._message = Message("Starting…", "info")
        self._scale = scale
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(int(78 * scale))

    def sizeHint(self) -> QSize:
        return QSize(800, int(78 * self._scale))

    def set_message(self, message: Message) -> None:
        if message != self._message:
            self._message = message
            self.update()

    @property
    def message(self) -> Message:
        return self._message

    def text(self) -> str:
        return self._message.text

    def _fitted(self, text: str, bold: bool, pixels: int) -> QFont:
        """The font at ``pixels`` high, shrunk until ``text`` fits in 92 % of the width on one line."""
        f = QFont(self.font())
        f.setBold(bold)
        size = max(8, pixels)
        while True:
            f.setPixelSize(size)
            if size <= 8 or QFontMetrics(f).horizontalAdvance(text) <= self.width() * 0.92:
                return f
            size = int(size * 0.9)

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), kind_color(self._message.kind))
        p.setPen(QColor(255, 255, 255))
        m = self._message
        if m.detail:
            p.setFont(self._fitted(m.text, True, int(self.height() * 0.5)))
            p.drawText(QRectF(0, 0, self.width(), self.height() * 0.68), Qt.AlignmentFlag.AlignCenter, m.text)
            p.setFont(self._fitted(m.detail, False, max(10, int(self.height() * 0.2))))
            p.drawText(QRectF(0, self.height() * 0.64, self.width(), self.height() * 0.34),
                       Qt.AlignmentFlag.AlignCenter, m.detail)
        else:
            p.setFont(self._fitted(m.text, True, int(self.height() * 0.6)))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, m.text)
        p.end()


class MessageStrip(QLabel):
    """Standing messages by topic (source, backend, state, faces, recording); hidden when there are none."""

    ORDER = ("state", "source", "backend", "model", "faces", "record", "snapshot", "settings")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._items: dict[str, tuple[str, str]] = {}
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setContentsMargins(8, 4, 8, 4)
        self.hide()

    def set(self, topic: str, text: str | None, level: str = "info", *, expire_ms: int | None = None) -> None:
        """Show ``text`` for ``topic`` (replacing its previous message); None or "" removes it.

        ``expire_ms`` removes the message after that long unless it was replaced meanwhile (confirmations).
        """
        if text:
            self._items[topic] = (text, level)
            if expire_ms:
                QTimer.singleShot(expire_ms, self, lambda: self._expire(topic, text))
        else:
            self._items.pop(topic, None)
        self._refresh()

    def _expire(self, topic: str, text: str) -> None:
        if self._items.get(topic, ("",))[0] == text:
            self.set(topic, None)

    def messages(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._items.items()}

    def _refresh(self) -> None:
        if not self._items:
            self.hide()
            return
        topics = sorted(self._items, key=lambda k: self.ORDER.index(k) if k in self.ORDER else len(self.ORDER))
        self.setText("\n".join(self._items[k][0] for k in topics))
        worst = max((self._items[k][1] for k in topics), key=lambda lv: ("info", "warning", "error").index(lv)
                    if lv in ("info", "warning", "error") else 0)
        c = kind_color(worst)
        self.setStyleSheet(f"QLabel {{ background: rgb({c.red()},{c.green()},{c.blue()}); color: white; "
                           f"font-weight: bold; }}")
        self.show()


__all__ = ["Message", "MessageStrip", "VerdictBanner", "describe", "main_track", "NEUTRAL"]
