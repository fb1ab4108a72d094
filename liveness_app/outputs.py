"""What a run leaves behind: the verdict JSONL, the audit log of verdict changes, and the run summary.

- ``JsonlWriter``: one ``FrameResult.to_record()`` line per frame (docs/architecture.md format); path ``-`` is standard
  output (each line written at once, no fsync or rotation). Every line goes to the
  file in one ``os.write`` on an ``O_APPEND`` descriptor (no user-space buffer), so a killed process leaves only
  complete lines; the file is fsynced when a track's verdict changes (and every ``sync_every_s``) and rotated by
  size (``path.1`` ... ``path.N``).
- ``AuditLog``: one JSON line per verdict *change* of a track (wall time, source time, frame, track, verdict,
  previous verdict, smoothed and raw score), line-atomic like the JSONL, fsynced after every change, rotated by
  size. Face images only when ``save_crops`` is enabled, and then at most ``retention`` files (the oldest are
  deleted).
- ``RunSummary``: frames, faces, tracks, verdict counts and per-stage timings of a run, as a table or a dict.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import statistics
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from .types import FrameResult

log = logging.getLogger(__name__)
STAGES = ("detect", "track", "crop", "score", "smooth")


class LineFile:
    """An append-only text file of whole lines: one ``os.write`` per line, fsync on demand, rotation by size.

    The descriptor is opened ``O_APPEND`` and each line (``\\n`` included) is written with a single system call
    and no user-space buffer, so a process killed at any moment leaves a file of complete lines (the write of a
    regular file is not torn by a signal). When the next line would make the file exceed ``max_bytes`` (> 0),
    the file is fsynced and renamed to ``path.1`` (older backups shift to ``.2`` ... ``.backups``; the oldest is
    deleted) and a new file is started. ``truncate`` empties an existing file on open (backups are kept).
    """

    def __init__(self, path: str | Path, *, truncate: bool = False, max_bytes: int = 64 * 2 ** 20, backups: int = 5):
        self.path = Path(path)
        if max_bytes < 0 or backups < 0:
            raise ValueError(f"max_bytes and backups must be >= 0, got {max_bytes}, {backups}")
        self.max_bytes, self.backups = int(max_bytes), int(backups)
        self._flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, self._flags | (os.O_TRUNC if truncate else 0), 0o644)
        except OSError as e:
            raise OSError(f"cannot write {self.path}: {e.strerror or e}") from e
        self.size = os.fstat(self._fd).st_size
        self.rotations = 0

    def write_line(self, text: str) -> None:
        """Append ``text`` plus a newline as one write (``text`` must not contain a newline)."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is closed")
        data = (text + "\n").encode("utf-8")
        if self.max_bytes and self.size and self.size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:  # a regular file writes everything at once; loop only for a short write (disk full)
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = os.open(self.path, self._flags, 0o644)
        self.size = 0
        self.rotations += 1
        log.info("rotated %s (%d bytes max, %d backups)", self.path, self.max_bytes, self.backups)

    def sync(self) -> None:
        """Force the written lines to disk (fsync)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """fsync and close (idempotent)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None


class StdoutLines:
    """``LineFile``'s interface over standard output (``--output -``): each line written and flushed at once."""

    def __init__(self) -> None:
        self.path = Path("-")
        self.size = 0
        self.rotations = 0

    def write_line(self, text: str) -> None:
        data = (text + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # straight to fd 1: no interleaving with Python's buffered sys.stdout
            n = os.write(1, view)
            view = view[n:]
        self.size += len(data)

    def sync(self) -> None:
        pass  # a pipe or terminal has nothing to fsync

    def close(self) -> None:
        pass  # standard output stays open for the summary and the caller

    closed = False


class JsonlWriter:
    """Writes one verdict record per frame to a JSONL file (created with its folder; truncated on open).

    Lines are atomic (see ``LineFile``); the file is fsynced whenever a track's verdict differs from the
    previous frame's, at least every ``sync_every_s`` seconds while lines arrive, and on close; it is rotated
    at ``max_bytes`` (0: never) keeping ``backups`` older files.
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 64 * 2 ** 20, backups: int = 5,
                 sync_every_s: float = 5.0):
        try:
            self._file: LineFile | StdoutLines | None = StdoutLines() if str(path) == "-" else \
                LineFile(path, truncate=True, max_bytes=max_bytes, backups=backups)
        except OSError as e:
            raise OSError(f"cannot write verdicts to {Path(path)}: {e.__cause__ or e}") from e
        self.path = self._file.path
        self.sync_every_s = sync_every_s
        self._verdicts: dict[int, str] = {}  # track id -> verdict in the previous frame only (bounded)
        self._synced_at = time.monotonic()
        self.lines = 0
        self.syncs = 0

    def write(self, result: FrameResult) -> None:
        if self._file is None:
            raise RuntimeError(f"JsonlWriter for {self.path} is closed")
        self._file.write_line(json.dumps(result.to_record(), separators=(",", ":")))
        self.lines += 1
        verdicts = {tr.track_id: tr.verdict for tr in result.tracks}
        changed = any(self._verdicts.get(tid, "uncertain") != v for tid, v in verdicts.items())
        self._verdicts = verdicts
        now = time.monotonic()
        if changed or now - self._synced_at >= self.sync_every_s:
            self._file.sync()
            self._synced_at = now
            self.syncs += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

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
                 retention: int = 500, max_bytes: int = 16 * 2 ** 20, backups: int = 5):
        self._f: LineFile | None = LineFile(path, max_bytes=max_bytes, backups=backups)
        self.path = self._f.path
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
            self._f.write_line(json.dumps(event))
            self._last[tr.track_id] = tr.verdict
            n += 1
        if n:
            self._f.sync()  # a verdict change is on disk before the next frame
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
    """Accumulates FrameResults: counts and per-stage timing statistics for the end-of-run report.

    Memory stays bounded on endless runs: timing medians and p95 cover the latest ``TIMING_WINDOW`` frames
    (means and totals cover the whole run), and per-track final verdicts keep at most ``MAX_TRACKS`` tracks
    (the oldest ended ones are folded into ``final_counts``).
    """

    TIMING_WINDOW = 10_000
    MAX_TRACKS = 10_000

    def __init__(self) -> None:
        self.frames = 0
        self.frames_with_faces = 0
        self.faces = 0
        self.dropped_faces = 0
        self.no_signal = 0
        self.tracks_seen = 0
        self.folded_final: Counter[str] = Counter()  # final verdicts of tracks dropped from ``final``
        self.verdicts: Counter[str] = Counter()  # per face observation
        self.final: dict[int, str] = {}  # track id -> its last verdict
        # per stage: the latest TIMING_WINDOW samples (median, p95) plus running count and sum (mean, total);
        # bounded so a run of days does not grow without limit
        self.timings: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=self.TIMING_WINDOW))
        self._timing_sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
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
            if tr.track_id not in self.final:
                self.tracks_seen += 1
            self.verdicts[tr.verdict] += 1
            self.final[tr.track_id] = tr.verdict
        while len(self.final) > self.MAX_TRACKS:  # dicts keep insertion order: the oldest track goes first
            oldest = next(iter(self.final))
            self.folded_final[self.final.pop(oldest)] += 1
        for stage, ms in result.timings_ms.items():
            self.timings[stage].append(ms)
            acc = self._timing_sums[stage]
            acc[0] += 1
            acc[1] += ms

    def to_dict(self) -> dict[str, Any]:
        def stats(stage: str) -> dict[str, float]:
            s = sorted(self.timings[stage])
            count, total = self._timing_sums[stage]
            return {"mean_ms": round(total / count, 3), "median_ms": round(statistics.median(s), 3),
                    "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 3), "total_ms": round(total, 1)}
        return {
            "frames": self.frames, "frames_with_faces": self.frames_with_faces, "faces": self.faces,
            "tracks": self.tracks_seen, "dropped_faces": self.dropped_faces, "no_signal": self.no_signal,
            "verdicts": {k: self.verdicts.get(k, 0) for k in ("live", "attack", "uncertain")},
            "final_verdicts": {k: sum(1 for v in self.final.values() if v == k) + self.folded_final[k]
                               for k in ("live", "attack", "uncertain")},
            "timings": {k: stats(k) for k, v in self.timings.items() if v},
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
