"""Verdict colours and words shared by every view (one place, so the box, the banner and the plot agree)."""
from __future__ import annotations

from PySide6.QtGui import QColor

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
