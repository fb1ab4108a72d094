"""Track ids across frames by box overlap (greedy IoU association), and the "largest faces win" cap.

A track survives ``max_missed`` frames without a matching detection; after that it is dropped, and a face that
comes back later gets a new id. Ids are never reused within a tracker's life. Time is not needed: the tracker
counts frames (``update`` once per processed frame).

Tentative tracks: a new face is followed quietly until it was matched in ``confirm_hits`` of its last
``confirm_window`` frames; only then does it get its id and appear in ``update``'s result (on screen, in the
JSONL, in the summary). A one-frame false detection therefore never becomes a track. ``confirm_hits = 1`` shows
every detection at once.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from .types import FaceBox


def iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def keep_largest(boxes: Sequence[FaceBox], max_faces: int) -> tuple[list[FaceBox], int]:
    """The ``max_faces`` largest boxes (by area, original order kept among them) and how many were dropped."""
    if len(boxes) <= max_faces:
        return list(boxes), 0
    order = sorted(range(len(boxes)), key=lambda i: -boxes[i].area)[:max_faces]
    return [boxes[i] for i in sorted(order)], len(boxes) - max_faces


@dataclass
class Track:
    """A tracked face: id (0 while tentative), latest box, frames since last matched, frames matched so far.

    ``recent`` holds whether the track was matched in each of its latest frames (newest last, at most
    ``confirm_window`` of them).
    """

    track_id: int
    box: FaceBox
    missed: int = 0
    hits: int = 1
    recent: deque = field(default_factory=lambda: deque([True]))

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0


@dataclass
class IoUTracker:
    """Greedy IoU tracker. ``update(boxes)`` -> the tracks matched or started in this frame, input order."""

    iou_min: float = 0.3
    max_missed: int = 5
    confirm_hits: int = 1
    confirm_window: int = 1
    tracks: dict[int, Track] = field(default_factory=dict)  # confirmed tracks by id
    tentative: list[Track] = field(default_factory=list)  # faces not (yet) seen often enough to be tracks
    next_id: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_hits <= self.confirm_window:
            raise ValueError(f"need 1 <= confirm_hits <= confirm_window, got {self.confirm_hits} of "
                             f"{self.confirm_window}")

    def update(self, boxes: Sequence[FaceBox]) -> list[Track]:
        """Associate this frame's boxes with tracks; unmatched boxes start tentative tracks, stale tracks end.

        Returns the confirmed tracks matched in this frame (a tentative one confirmed now included), in the
        order of ``boxes``.
        """
        held = list(self.tracks.values()) + self.tentative
        pairs = sorted(((iou(tr.box, b), -i, j) for i, tr in enumerate(held) for j, b in enumerate(boxes)),
                       reverse=True)  # ties: the earlier track (confirmed before tentative, older first) wins
        assigned: dict[int, int] = {}  # box index -> index into held
        used: set[int] = set()
        for overlap, neg_i, j in pairs:
            if overlap < self.iou_min:
                break
            if -neg_i in used or j in assigned:
                continue
            assigned[j] = -neg_i
            used.add(-neg_i)
        matched: list[Track] = []
        for j, box in enumerate(boxes):
            i = assigned.get(j)
            if i is None:
                tr = Track(0, box, recent=deque([True], maxlen=self.confirm_window))
                self.tentative.append(tr)
            else:
                tr = held[i]
                tr.box, tr.missed, tr.hits = box, 0, tr.hits + 1
                tr.recent.append(True)
            matched.append(tr)
        for i, tr in enumerate(held):
            if i not in used:
                tr.missed += 1
                tr.recent.append(False)
        self.tracks = {tid: tr for tid, tr in self.tracks.items() if tr.missed <= self.max_missed}
        still = []
        for tr in self.tentative:
            if tr.missed > self.max_missed:
                continue
            if sum(tr.recent) >= self.confirm_hits:
                tr.track_id = self.next_id
                self.next_id += 1
                self.tracks[tr.track_id] = tr
            else:
                still.append(tr)
        self.tentative = still
        return [tr for tr in matched if tr.confirmed]

    def ended(self, alive: Sequence[int]) -> list[int]:
        """Ids from ``alive`` that this tracker no longer holds (their smoothers can be dropped)."""
        return [tid for tid in alive if tid not in self.tracks]

    def set_confirmation(self, hits: int, window: int) -> None:
        """Change N of M for tracks from now on (existing tracks keep their state)."""
        if not 1 <= hits <= window:
            raise ValueError(f"need 1 <= confirm_hits <= confirm_window, got {hits} of {window}")
        self.confirm_hits, self.confirm_window = hits, window
        for tr in [*self.tracks.values(), *self.tentative]:
            tr.recent = deque(tr.recent, maxlen=window)

    def reset(self) -> None:
        """Forget all tracks (ids keep increasing so old ids are never reused)."""
        self.tracks.clear()
        self.tentative.clear()
