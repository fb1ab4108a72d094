"""Records passed from the pipeline to the GUI, writers and tests (frozen: safe across threads), and the
``Scorer`` interface the pipeline scores with."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Sequence, runtime_checkable

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
        """The JSONL verdict record of docs/architecture.md."""
        return {
            "frame": self.index,
            "t": round(self.t, 4),
            "faces": [{"track": tr.track_id, "box": [round(tr.box.x, 1), round(tr.box.y, 1), round(tr.box.w, 1),
                                                      round(tr.box.h, 1)],
                       "score": None if tr.raw_score is None else round(tr.raw_score, 5),
                       "smoothed": None if tr.smoothed is None else round(tr.smoothed, 5),
                       "verdict": tr.verdict} for tr in self.tracks],
        }


NoticeLevel = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Notice:
    """Non-fatal news of a run for the window's message strip and the log.

    ``topic`` says which message it replaces: "source" (demo fallback), "backend" (which backend runs, or a
    fallback), "record" (verdict recording), "audit" (the audit log), "settings" (a rejected setting).
    ``transient``: a confirmation that may disappear after a while (a saved recording).
    """

    topic: str
    level: NoticeLevel
    text: str
    transient: bool = False


@runtime_checkable
class Scorer(Protocol):
    """What the Pipeline and the run session need of a scorer (liveness_app.scorer.create_scorer makes one;
    tests pass fakes): P(attack) per uint8 RGB crop of ``input_size`` px, in one batched call."""

    input_size: int
    threshold: float  # the checkpoint's decision threshold (validation EER)
    backend_name: str  # the runtime in use, shown in the status bar
    notice: str  # why the backend differs from the one asked for, or which one auto chose; "" otherwise
    model_path: "Path | None"

    def score(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """float32 P(attack) per crop."""

    def score_with_routing(self, crops: Sequence[np.ndarray]) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """(P(attack), expert shares crops x moe_layers x experts, token dispatch crops x moe_layers x patches x
        experts) from one model call; the routing arrays are empty for a dense model. Called only when the
        config asks for routing (``expert_weights``)."""
