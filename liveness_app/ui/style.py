"""Verdict colours and words shared by every view (one place, so the box, the banner and the plot agree)."""
from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QWidget

VERDICT_COLORS: dict[str, QColor] = {
    "live": QColor(46, 170, 80),
    "attack": QColor(220, 50, 47),
    "uncertain": QColor(240, 170, 30),
}
NEUTRAL = QColor(120, 130, 140)

VERDICT_WORDS: dict[str, str] = {"live": "LIVE", "attack": "ATTACK", "uncertain": "UNCERTAIN"}


def verdict_color(verdict: str | None) -> QColor:
    """The colour of a verdict ("live" | "attack" | "uncertain"); grey for anything else (no face, no signal)."""
    return QColor(VERDICT_COLORS.get(verdict or "", NEUTRAL))


PANEL_BG = QColor(24, 27, 32)
PANEL_TEXT = QColor(170, 175, 185)


def panel_painter(widget: QWidget, point_size: float = 8.5) -> QPainter:
    """A started, antialiased painter on ``widget`` with the side panels' dark background and small font.

    The caller ends it (``p.end()``); ``p.fontMetrics()`` gives the font's metrics for layout.
    """
    p = QPainter(widget)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.fillRect(widget.rect(), PANEL_BG)
    f = QFont(widget.font())
    f.setPointSizeF(point_size)
    p.setFont(f)
    return p
