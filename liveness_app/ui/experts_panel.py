"""What the model does inside: the per-expert routing share of each Soft MoE layer for the selected face,
and beside it a map over the face of which expert's slots each patch is dispatched to most.

The numbers come from the scoring call itself (``Scorer.score_with_routing``; no second model pass): per MoE
layer, each expert's share of the combine weights for this face (a row sums to one; a dashed line marks the
uniform share 1 / experts, so a specialised expert stands out), and per patch token the share of its
dispatch mass going to each expert's slots. The map colours each patch by the expert that takes most of it,
on the g x g patch grid of the crop, brighter the more decided that patch is relative to the most decided
patch of this face (for the bundled model every share is close to uniform, about 0.254 against 0.25, so
absolute brightness would show nothing). On the 200 agreement crops of the demo clip the combine shares are
0.25 +- 0.001 for every segment, while the dispatch maps differ somewhat by segment: e.g. in the last MoE
layer expert 1 takes 44 % of the patches of replay crops against 25 % of live ones. A dense model has no MoE
layers and says so.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .style import PANEL_TEXT, panel_painter

_BAR = QColor(80, 150, 230)
_BAR_TOP = QColor(120, 200, 255)
# one colour per expert in the dispatch map (cycled for more than six experts)
EXPERT_COLOURS = (QColor(230, 90, 80), QColor(90, 190, 100), QColor(80, 150, 230), QColor(235, 190, 60),
                  QColor(180, 110, 220), QColor(70, 200, 200))


def dispatch_map(tokens: "np.ndarray | None") -> "tuple[np.ndarray, np.ndarray] | None":
    """layers x patches x experts dispatch shares -> (expert index, its share), each layers x g x g; None
    when the patches do not form a square grid (or there is nothing to show)."""
    if tokens is None:
        return None
    t = np.asarray(tokens, dtype=np.float32)
    if t.ndim != 3 or t.shape[0] == 0 or t.shape[2] == 0:
        return None
    g = math.isqrt(t.shape[1])
    if g * g != t.shape[1]:
        return None
    best = t.argmax(-1)
    return best.reshape(t.shape[0], g, g), t.max(-1).reshape(t.shape[0], g, g)


class ExpertsPanel(QWidget):
    """A small bar chart, one row per MoE layer, one bar per expert (its routing share for one face)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._weights: tuple[tuple[float, ...], ...] | None = None
        self._map: tuple[np.ndarray, np.ndarray] | None = None
        self._track: int | None = None
        self._message = "Expert routing appears here for the selected face."
        self.setMinimumSize(220, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Soft MoE routing: each bar is one expert's share of the layer's combine weights for "
                        "the selected face (rows sum to 1; dashed: the uniform share). The map beside it shows "
                        "the face's patches coloured by the expert whose slots take most of each patch "
                        "(brighter: a larger share).")

    def sizeHint(self) -> QSize:
        return QSize(360, 170)

    def set_weights(self, weights: Sequence[Sequence[float]] | None, track_id: int | None = None,
                    token_experts: "np.ndarray | None" = None) -> None:
        """Show ``weights`` (moe_layers x experts) for ``track_id``; an empty sequence means a dense model.

        ``token_experts`` (moe_layers x patches x experts dispatch shares) adds the per-patch map."""
        self._map = dispatch_map(token_experts) if weights else None
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
        self._map = None
        self._message = text
        self.update()

    @property
    def weights(self) -> tuple[tuple[float, ...], ...] | None:
        return self._weights

    @property
    def token_map(self) -> "tuple[np.ndarray, np.ndarray] | None":
        """(expert index, share), each layers x g x g, of the face shown; None without a map."""
        return self._map

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
        maps = self._map if self._map is not None and len(self._map[0]) == len(rows) else None
        map_w = (row_h - 4) if maps is not None else 0.0  # a square map per layer at the right of its bars
        for i, row in enumerate(rows):
            y0 = top + i * row_h
            area = QRectF(label_w, y0 + 2, self.width() - label_w - 6 - (map_w + 6 if map_w else 0), row_h - 4)
            if maps is not None and map_w > 4:
                self._paint_map(p, maps[0][i], maps[1][i], QRectF(self.width() - 6 - map_w, y0 + 2, map_w, map_w),
                                len(row))
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
        legend = f"experts 1..{n_exp}; dashed = uniform 1/{n_exp}"
        if maps is not None:
            legend += "; map: patch -> expert"
        p.drawText(QRectF(label_w, self.height() - fm.height() - 2, self.width() - label_w - 6, fm.height()),
                   Qt.AlignmentFlag.AlignLeft, legend)
        p.end()

    @staticmethod
    def _paint_map(p, best: np.ndarray, share: np.ndarray, rect: QRectF, n_experts: int) -> None:
        """g x g cells, each in its dominant expert's colour, brighter the larger that expert's share is."""
        g = best.shape[0]
        cell = rect.width() / g
        lo = 1.0 / max(n_experts, 1)  # a share at the uniform level is drawn dim
        span = max(float(share.max()) - lo, 1e-6)  # the most decided patch of this face is drawn brightest
        p.setPen(Qt.PenStyle.NoPen)
        for r in range(g):
            for c in range(g):
                colour = QColor(EXPERT_COLOURS[int(best[r, c]) % len(EXPERT_COLOURS)])
                strength = min(max((float(share[r, c]) - lo) / span, 0.0), 1.0)
                colour.setAlpha(int(70 + 185 * strength))
                p.setBrush(colour)
                p.drawRect(QRectF(rect.left() + c * cell, rect.top() + r * cell, cell, cell))
