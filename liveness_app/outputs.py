"""What a run leaves behind: the verdict JSONL, the audit log of verdict changes, and the run summary.

- ``JsonlWriter``: one ``FrameResult.to_record()`` line per frame (design.md format), flushed per line so a
  killed run keeps everything written so far.
- ``AuditLog``: one JSON line per verdict *change* of a track (wall time, source time, frame, track, verdict,
  previous verdict, smoothed and raw score). Face images only when ``save_crops`` is enabled, and then at most
  ``retention`` files (the oldest are deleted).
- ``RunSummary``: frames, faces, tracks, verdict counts and per-stage timings of a run, as a table or a dict.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any, Mapping

import cv2
import numpy as np

from .types import FrameResult

log = logging.getLogger(__name__)
STAGES = ("detect", "track", "crop", "score", "smooth")


class JsonlWriter:
    """Appends one verdict record per frame to a JSONL file (created with its folder; truncated on open)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f: IO[str] | None = self.path.open("w", encoding="utf-8")
        except OSError as e:
            raise OSError(f"cannot write verdicts to {self.path}: {e.strerror or e}") from e
        self.lines = 0

    def write(self, result: FrameResult) -> None:
        if self._f is None:
            raise RuntimeError(f"JsonlWriter for {self.path} is closed")
        self._f.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AuditLog:
    """Records verdict changes per track as JSON lines; optionally the face crop of each change.

    ``record(result, crops)`` compares each track's verdict with the last one logged for it and writes a line
    only on a change (a new track's first verdict counts as a change from ``null``).
    """

    def __init__(self, path: str | Path, *, save_crops: bool = False, crops_dir: str | Path | None = None,
                 retention: int = 500):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.save_crops = save_crops
        self.crops_dir = Path(crops_dir) if crops_dir else self.path.parent / "crops"
        self.retention = retention
        self._last: dict[int, str] = {}
        self.events = 0
        if save_crops:
            self.crops_dir.mkdir(parents=True, exist_ok=True)
            log.warning("saving face crops of verdict changes to %s (at most %d files)", self.crops_dir, retention)

    def record(self, result: FrameResult, crops: Mapping[int, np.ndarray] | None = None) -> int:
        """Log the verdict changes in ``result``; ``crops`` maps track id -> RGB crop. Returns lines written."""
        if self._f is None:
            raise RuntimeError(f"AuditLog for {self.path} is closed")
        n = 0
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        for tr in result.tracks:
            previous = self._last.get(tr.track_id)
            if previous == tr.verdict:
                continue
            event: dict[str, Any] = {
                "time": now, "t": round(result.t, 4), "frame": result.index, "track": tr.track_id,
                "verdict": tr.verdict, "previous": previous,
                "score": None if tr.smoothed is None else round(tr.smoothed, 5),
                "raw": None if tr.raw_score is None else round(tr.raw_score, 5)}
            if self.save_crops and crops and tr.track_id in crops:
                event["crop"] = str(self._save_crop(crops[tr.track_id], result.index, tr.track_id, tr.verdict))
            self._f.write(json.dumps(event) + "\n")
            self._last[tr.track_id] = tr.verdict
            n += 1
        if n:
            self._f.flush()
        self.events += n
        return n

    def _save_crop(self, crop_rgb: np.ndarray, frame: int, track: int, verdict: str) -> Path:
        path = self.crops_dir / f"f{frame:08d}_t{track}_{verdict}.png"
        cv2.imwrite(str(path), cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR))
        files = sorted(self.crops_dir.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
        for old in files[:max(0, len(files) - self.retention)]:
            old.unlink(missing_ok=True)
        return path

    def forget(self, track_id: int) -> None:
        """Drop the memory of an ended track."""
        self._last.pop(track_id, None)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RunSummary:
    """Accumulates FrameResults: counts and per-stage timing statistics for the end-of-run report."""

    def __init__(self) -> None:
        self.frames = 0
        self.frames_with_faces = 0
        self.faces = 0
        self.dropped_faces = 0
        self.no_signal = 0
        self.track_ids: set[int] = set()
        self.verdicts: Counter[str] = Counter()  # per face observation
        self.final: dict[int, str] = {}  # track id -> its last verdict
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.wall_s = 0.0

    def add(self, result: FrameResult) -> None:
        if result.status != "ok":
            self.no_signal += result.status == "no signal"
            return
        self.frames += 1
        self.frames_with_faces += bool(result.tracks)
        self.faces += len(result.tracks)
        self.dropped_faces += result.dropped_faces
        for tr in result.tracks:
            self.track_ids.add(tr.track_id)
            self.verdicts[tr.verdict] += 1
            self.final[tr.track_id] = tr.verdict
        for stage, ms in result.timings_ms.items():
            self.timings[stage].append(ms)

    def to_dict(self) -> dict[str, Any]:
        def stats(v: list[float]) -> dict[str, float]:
            s = sorted(v)
            return {"mean_ms": round(statistics.fmean(s), 3), "median_ms": round(statistics.median(s), 3),
                    "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 3), "total_ms": round(sum(s), 1)}
        return {
            "frames": self.frames, "frames_with_faces": self.frames_with_faces, "faces": self.faces,
            "tracks": len(self.track_ids), "dropped_faces": self.dropped_faces, "no_signal": self.no_signal,
            "verdicts": {k: self.verdicts.get(k, 0) for k in ("live", "attack", "uncertain")},
            "final_verdicts": {k: sum(1 for v in self.final.values() if v == k)
                               for k in ("live", "attack", "uncertain")},
            "timings": {k: stats(v) for k, v in self.timings.items() if v},
            "wall_s": round(self.wall_s, 3),
            "fps": round(self.frames / self.wall_s, 2) if self.wall_s > 0 else None,
        }

    def format_table(self) -> str:
        """A short human-readable report (printed by the headless CLI at the end of a run)."""
        d = self.to_dict()
        v, f = d["verdicts"], d["final_verdicts"]
        lines = [
            "run summary",
            f"  frames            {d['frames']} ({d['frames_with_faces']} with faces, {d['no_signal']} no-signal)",
            f"  faces             {d['faces']} in {d['tracks']} tracks ({d['dropped_faces']} over max_faces)",
            f"  verdicts/face     live {v['live']}  attack {v['attack']}  uncertain {v['uncertain']}",
            f"  final per track   live {f['live']}  attack {f['attack']}  uncertain {f['uncertain']}",
            f"  wall time         {d['wall_s']:.2f} s" + (f" ({d['fps']:.1f} frames/s)" if d["fps"] else ""),
            "  stage        mean ms  median ms  p95 ms",
        ]
        order = [s for s in (*STAGES, "total") if s in d["timings"]] + \
                [s for s in d["timings"] if s not in (*STAGES, "total")]
        for stage in order:
            t = d["timings"][stage]
            lines.append(f"  {stage:<10} {t['mean_ms']:>9.2f} {t['median_ms']:>10.2f} {t['p95_ms']:>7.2f}")
        return "\n".join(lines)
