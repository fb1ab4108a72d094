"""What the model does inside: the per-expert routing share of each Soft MoE layer for the selected face.

The numbers come from ``Scorer.expert_weights`` (crops x moe_layers x experts; each row sums to one): the
share of each expert in that layer's combine weights for this face. A dashed line marks the uniform share
1 / experts, so a specialised expert stands out. A dense model has no MoE layers and says so.
"""
from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .style import PANEL_TEXT, panel_painter

_BAR = QColor(80, 150, 230)
_BAR_TOP = QColor(120, 200, 255)


class ExpertsPanel(QWidget):
    """A small bar chart, one row per MoE layer, one bar per expert (its routing share for one face)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._weights: tuple[tuple[float, ...], ...] | None = None
        self._track: int | None = None
        self._message = "Expert routing appears here for the selected face."
        self.setMinimumSize(220, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Soft MoE routing: each bar is one expert's share of the layer's combine weights for "
                        "the selected face (rows sum to 1). Dashed: the uniform share.")

    def sizeHint(self) -> QSize:
        return QSize(320, 150)

    def set_weights(self, weights: Sequence[Sequence[float]] | None, track_id: int | None = None) -> None:
        """Show ``weights`` (moe_layers x experts) for ``track_id``; an empty sequence means a dense model."""
        if weights is None:
            self._weights = None
        else:
            self._weights = tuple(tuple(float(v) for v in row) for row in weights)
            if not self._weights:
                self._message = "This model has no MoE layers (dense): nothing to route."
        self._track = track_id
        self.update()

    def set_message(self, text: str) -> None:
        self._weights = None
        self._message = text
        self.update()

    @property
    def weights(self) -> tuple[tuple[float, ...], ...] | None:
        return self._weights

    def paintEvent(self, event: QPaintEvent) -> None:
        p = panel_painter(self)
        fm = p.fontMetrics()
        p.setPen(PANEL_TEXT)
        title = "MoE expert routing" + ("" if self._track is None else f", face #{self._track}")
        p.drawText(QRectF(6, 2, self.width() - 12, fm.height()), Qt.AlignmentFlag.AlignLeft, title)
        rows = self._weights
        if not rows:
            p.drawText(QRectF(6, fm.height() + 4, self.width() - 12, self.height() - fm.height() - 8),
                       Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
            p.end()
            return
        label_w = fm.horizontalAdvance("layer 00") + 8
        top = fm.height() + 6
        row_h = (self.height() - top - fm.height() - 4) / len(rows)
        for i, row in enumerate(rows):
            y0 = top + i * row_h
            area = QRectF(label_w, y0 + 2, self.width() - label_w - 6, row_h - 4)
            p.setPen(PANEL_TEXT)
            p.drawText(QRectF(2, y0, label_w - 4, row_h), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       f"layer {i + 1}")
            n = max(len(row), 1)
            # The uniform share 1/n sits at half height at most, so both favoured and starved experts show.
            top_v = max(max(row), 2.0 / n) / 0.95
            bw = area.width() / n
            best = max(range(len(row)), key=row.__getitem__)
            p.setPen(Qt.PenStyle.NoPen)
            for j, v in enumerate(row):
                h = area.height() * max(v, 0.0) / top_v
                p.setBrush(_BAR_TOP if j == best else _BAR)
                p.drawRect(QRectF(area.left() + j * bw + 1, area.bottom() - h, max(bw - 2, 1), h))
            uy = area.bottom() - area.height() * (1.0 / n) / top_v
            p.setPen(QPen(QColor(230, 230, 230, 150), 1, Qt.PenStyle.DashLine))
            p.drawLine(QPointF(area.left(), uy), QPointF(area.right(), uy))
        p.setPen(QColor(150, 155, 165))
        n_exp = len(rows[0])
        p.drawText(QRectF(label_w, self.height() - fm.height() - 2, self.width() - label_w - 6, fm.height()),
                   Qt.AlignmentFlag.AlignLeft, f"experts 1..{n_exp}; dashed = uniform 1/{n_exp}")
        p.end()
