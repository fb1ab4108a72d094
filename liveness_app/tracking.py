"""Track ids across frames by box overlap (greedy IoU association), and the "largest faces win" cap.

A track survives ``max_missed`` frames without a matching detection; after that it is dropped, and a face that
comes back later gets a new id. Ids are never reused within a tracker's life. Time is not needed: the tracker
counts frames (``update`` once per processed frame).
"""
from __future__ import annotations

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
    """A tracked face: id, its latest box, frames since it was last matched, frames matched so far."""

    track_id: int
    box: FaceBox
    missed: int = 0
    hits: int = 1


@dataclass
class IoUTracker:
    """Greedy IoU tracker. ``update(boxes)`` -> the tracks matched or started in this frame, input order."""

    iou_min: float = 0.3
    max_missed: int = 5
    tracks: dict[int, Track] = field(default_factory=dict)
    next_id: int = 1

    def update(self, boxes: Sequence[FaceBox]) -> list[Track]:
        """Associate this frame's boxes with live tracks; unmatched boxes start tracks, stale tracks end."""
        pairs = sorted(((iou(tr.box, b), tid, j) for tid, tr in self.tracks.items() for j, b in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, int] = {}  # box index -> track id
        used: set[int] = set()
        for overlap, tid, j in pairs:
            if overlap < self.iou_min:
                break
            if tid in used or j in assigned:
                continue
            assigned[j] = tid
            used.add(tid)
        out = []
        for j, box in enumerate(boxes):
            tid = assigned.get(j)
            if tid is None:
                tid = self.next_id
                self.next_id += 1
                self.tracks[tid] = Track(tid, box)
            else:
                tr = self.tracks[tid]
                tr.box, tr.missed, tr.hits = box, 0, tr.hits + 1
            out.append(self.tracks[tid])
        current = {tr.track_id for tr in out}
        for tid in list(self.tracks):
            if tid not in current:
                self.tracks[tid].missed += 1
                if self.tracks[tid].missed > self.max_missed:
                    del self.tracks[tid]
        return out

    def ended(self, alive: Sequence[int]) -> list[int]:
        """Ids from ``alive`` that this tracker no longer holds (their smoothers can be dropped)."""
        return [tid for tid in alive if tid not in self.tracks]

    def reset(self) -> None:
        """Forget all tracks (ids keep increasing so old ids are never reused)."""
        self.tracks.clear()
