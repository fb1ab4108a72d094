"""The bundled demo clip's ground truth (assets/demo.json) against the verdicts: a running per-segment scorecard.

The clip has four labelled segments (live, print, replay, face swap; see assets/ASSETS.md). ``DemoScorecard``
takes the pipeline's FrameResults and counts, per segment, the face observations judged live / attack /
uncertain and how many agree with the segment's label. The GUI shows it next to the verdict while the demo
plays; ``--demo --headless`` prints it at the end of the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ASSETS
from .types import FrameResult

DEMO_JSON = ASSETS / "demo.json"


@dataclass(frozen=True)
class Segment:
    name: str
    label: str  # "live" | "attack"
    start: float  # seconds into the clip
    end: float
    caption: str = ""


@dataclass
class SegmentScore:
    """Face observations of one segment: verdict counts; ``agree`` = decided verdicts equal to the label."""

    segment: Segment
    frames: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"live": 0, "attack": 0, "uncertain": 0})

    @property
    def decided(self) -> int:
        return self.counts["live"] + self.counts["attack"]

    @property
    def agree(self) -> int:
        return self.counts[self.segment.label]

    @property
    def agreement(self) -> float | None:
        """Share of decided verdicts that match the ground truth (None before any verdict)."""
        return self.agree / self.decided if self.decided else None


def load_segments(path: str | Path = DEMO_JSON) -> tuple[list[Segment], float]:
    """The labelled segments and the clip length in seconds from a demo.json; ValueError when malformed."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
        segments = [Segment(s["name"], s["label"], float(s["start"]), float(s["end"]), s.get("caption", ""))
                    for s in meta["segments"]]
        seconds = float(meta["seconds"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the demo ground truth {path}: {e}") from e
    if not segments or any(s.label not in ("live", "attack") for s in segments):
        raise ValueError(f"{path}: segments must be labelled live or attack")
    return segments, seconds


def is_demo_clip(source: Any, demo_video: Path) -> bool:
    """Whether ``source`` (a path or spec) is the bundled demo clip."""
    try:
        return isinstance(source, (str, Path)) and Path(source).resolve() == demo_video.resolve()
    except OSError:
        return False


class DemoScorecard:
    """Per-segment agreement of verdicts with the demo clip's ground truth (``add`` each FrameResult)."""

    def __init__(self, segments: list[Segment], seconds: float):
        self.seconds = seconds
        self.scores = [SegmentScore(s) for s in segments]

    @classmethod
    def load(cls, path: str | Path = DEMO_JSON) -> "DemoScorecard":
        return cls(*load_segments(path))

    def segment_at(self, t: float) -> SegmentScore | None:
        """The segment playing at clip time ``t`` (seconds; a looped clip's time wraps)."""
        if self.seconds > 0:
            t = t % self.seconds
        for s in self.scores:
            if s.segment.start <= t < s.segment.end:
                return s
        return None

    def add(self, result: FrameResult) -> SegmentScore | None:
        if result.status != "ok":
            return None
        score = self.segment_at(result.t)
        if score is not None:
            score.frames += 1
            for tr in result.tracks:
                score.counts[tr.verdict] += 1
        return score

    def reset(self) -> None:
        for s in self.scores:
            s.frames = 0
            s.counts = {"live": 0, "attack": 0, "uncertain": 0}

    def overall(self) -> tuple[int, int]:
        """(agreeing, decided) over all segments."""
        return sum(s.agree for s in self.scores), sum(s.decided for s in self.scores)

    def to_dict(self) -> dict[str, Any]:
        agree, decided = self.overall()
        return {"segments": [{"name": s.segment.name, "label": s.segment.label, "frames": s.frames, **s.counts,
                              "agreement": None if s.agreement is None else round(s.agreement, 4)}
                             for s in self.scores],
                "agreement": round(agree / decided, 4) if decided else None}

    def format_table(self) -> str:
        lines = ["demo scorecard (ground truth: assets/demo.json; agreement = decided verdicts matching the label)",
                 "  segment    truth   frames  live  attack  uncertain  agreement"]
        for s in self.scores:
            c = s.counts
            pct = "-" if s.agreement is None else f"{100 * s.agreement:.1f} %"
            lines.append(f"  {s.segment.name:<10} {s.segment.label:<7} {s.frames:>6} {c['live']:>5} {c['attack']:>7} "
                         f"{c['uncertain']:>10} {pct:>10}")
        agree, decided = self.overall()
        lines.append(f"  overall    {agree} of {decided} decided verdicts agree"
                     + (f" ({100 * agree / decided:.1f} %)" if decided else ""))
        return "\n".join(lines)
