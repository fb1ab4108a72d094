"""Result records passed from the pipeline to the GUI, writers and tests (frozen: safe across threads)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Verdict = Literal["live", "attack", "uncertain"]


@dataclass(frozen=True)
class FaceBox:
    """A detected face in frame pixels: top-left x, y, width, height; detector confidence."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)


@dataclass(frozen=True)
class TrackResult:
    track_id: int
    box: FaceBox
    raw_score: float | None  # P(attack) of this frame's crop; None when the crop was not scored
    smoothed: float | None  # temporal estimate of P(attack); None before any evidence
    verdict: Verdict
    quality_ok: bool = True  # False: too small, blurred or cut off; not counted as evidence
    expert_weights: tuple[tuple[float, ...], ...] | None = None  # MoE layers x experts, when requested
    # per patch token, the share of its dispatch mass that goes to each expert's slots: MoE layers x patches x
    # experts (read-only float32; argmax = the expert the token is sent to most), from the same model call
    token_experts: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class FrameResult:
    index: int  # frame number from the source, 0-based
    t: float  # seconds: source timestamp (file position for videos, monotonic capture time for cameras)
    frame: np.ndarray | None  # the BGR frame (H W 3 uint8) the result belongs to; None when not kept
    tracks: tuple[TrackResult, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds for this frame
    status: str = "ok"  # "ok" | "no signal" | "end of stream" | an error message for the UI
    dropped_faces: int = 0  # faces beyond max_faces that were not scored

    def to_record(self) -> dict:
        """The JSONL verdict record of design.md."""
        return {
            "frame": self.index,
            "t": round(self.t, 4),
            "faces": [{"track": tr.track_id, "box": [round(tr.box.x, 1), round(tr.box.y, 1), round(tr.box.w, 1),
                                                      round(tr.box.h, 1)],
                       "score": None if tr.raw_score is None else round(tr.raw_score, 5),
                       "smoothed": None if tr.smoothed is None else round(tr.smoothed, 5),
                       "verdict": tr.verdict} for tr in self.tracks],
        }
