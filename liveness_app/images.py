"""``liveness --images PATH... [--recursive] [--output results.jsonl|results.csv|-]``: score photos one by one.

Every image is judged on its own (``LivenessDetector.score_image``: no tracking, no temporal smoothing), and
gets one record: its path, its size and every face found (box, P(attack), verdict, detector confidence,
failed quality checks), or ``"faces": []`` with a ``reason`` ("no face found", "cannot decode ...", "image not
found ..."). JSONL writes one record per line; CSV one row per face (an image without a face gets one row with
the reason); ``-`` (the default) is standard output. A progress bar goes to stderr when it is a terminal, and a
summary (images, faces, live / attack, no face, unreadable) to stderr at the end. The exit code is 0 unless no
image at all could be read (2).
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

from .sources import IMAGE_EXTENSIONS

CSV_FIELDS = ("path", "width", "height", "face", "x", "y", "w", "h", "p_attack", "verdict", "detector_confidence",
              "quality", "reason")


def collect_images(paths: Sequence[str | Path], recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Files to score from files and folders (a folder: its image files by extension, sorted; with
    ``recursive`` also those of its sub-folders). Returns (images, missing paths). A file named explicitly is
    taken whatever its extension (it is reported if it cannot be decoded)."""
    images: list[Path] = []
    missing: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            images.extend(sorted(f for f in found if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file():
            images.append(p)
        else:
            missing.append(p)
    return images, missing


@dataclass
class ImageSummary:
    """Counts of an --images run."""

    images: int = 0
    unreadable: int = 0
    no_face: int = 0
    faces: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: {"live": 0, "attack": 0})
    wall_s: float = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.images += 1
        if record.get("reason") and not record["faces"]:
            if record["reason"] == NO_FACE:
                self.no_face += 1
            else:
                self.unreadable += 1
        for face in record["faces"]:
            self.faces += 1
            self.verdicts[face["verdict"]] += 1

    @property
    def readable(self) -> int:
        return self.images - self.unreadable

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "unreadable": self.unreadable, "no_face": self.no_face, "faces": self.faces,
                "verdicts": dict(self.verdicts), "wall_s": round(self.wall_s, 3)}

    def format_table(self) -> str:
        v = self.verdicts
        return "\n".join([
            "image summary",
            f"  images            {self.images} ({self.readable} read, {self.unreadable} unreadable)",
            f"  faces             {self.faces} (live {v['live']}, attack {v['attack']})",
            f"  no face found     {self.no_face} of {self.images} images",
            f"  wall time         {self.wall_s:.2f} s",
        ])


NO_FACE = "no face found"


def score_record(detector: Any, path: Path) -> dict[str, Any]:
    """The record of one image file (never raises for a bad file: the reason is in the record)."""
    from .api import ImageReadError, read_image_file

    record: dict[str, Any] = {"path": str(path)}
    try:
        frame = read_image_file(path)
    except (FileNotFoundError, ImageReadError) as e:
        return {**record, "faces": [], "reason": str(e)}
    record["width"], record["height"] = int(frame.shape[1]), int(frame.shape[0])
    faces = detector.score_image(frame, color="bgr")
    record["faces"] = [face.to_dict() for face in faces]
    if not faces:
        record["reason"] = NO_FACE
    return record


class RecordWriter:
    """Writes image records as JSONL (one per line) or CSV (one row per face) to a file or standard output."""

    def __init__(self, output: str | None):
        self.target = output or "-"
        self.format = "csv" if self.target.lower().endswith(".csv") else "jsonl"
        self.records = 0
        if self.target == "-":
            self._stream: IO[str] = sys.stdout
            self._own = False
        else:
            path = Path(self.target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._stream = path.open("w", encoding="utf-8", newline="")
            except OSError as e:
                raise OSError(f"cannot write {path}: {e.strerror or e}") from e
            self._own = True
        self._csv = csv.DictWriter(self._stream, CSV_FIELDS) if self.format == "csv" else None
        if self._csv is not None:
            self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is None:
            self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            base = {"path": record["path"], "width": record.get("width", ""), "height": record.get("height", "")}
            if not record["faces"]:
                self._csv.writerow({**base, "reason": record.get("reason", "")})
            for i, face in enumerate(record["faces"]):
                x, y, w, h = face["box"]
                self._csv.writerow({**base, "face": i, "x": x, "y": y, "w": w, "h": h, "p_attack": face["p_attack"],
                                    "verdict": face["verdict"], "detector_confidence": face["detector_confidence"],
                                    "quality": ";".join(face["quality"])})
        self._stream.flush()  # a reader (tail -f, a pipe) sees each image as soon as it is scored
        self.records += 1

    def close(self) -> None:
        if self._own and not self._stream.closed:
            self._stream.close()


class Progress:
    """A one-line progress bar on ``stream`` when it is a terminal (nothing otherwise, so logs stay clean)."""

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 30, *, enabled: bool = True):
        self.total, self.width = total, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 1 and isatty(self.stream)
        self._last = 0.0

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self.total and now - self._last < 0.1:  # at most 10 redraws per second
            return
        self._last = now
        filled = int(self.width * done / max(self.total, 1))
        name = (label[-40:]) if label else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {name:<40}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.width + 54) + "\r")
            self.stream.flush()


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def score_images(detector: Any, images: Iterable[Path], writer: RecordWriter, progress: Progress,
                 missing: Sequence[Path] = ()) -> ImageSummary:
    """Score every image, write its record, advance the progress bar; returns the summary."""
    summary = ImageSummary()
    started = time.perf_counter()
    try:
        for p in missing:
            record = {"path": str(p), "faces": [], "reason": f"image not found: {p}"}
            writer.write(record)
            summary.add(record)
        for i, path in enumerate(images, 1):
            record = score_record(detector, path)
            writer.write(record)
            summary.add(record)
            progress.update(i, path.name)
    finally:
        progress.finish()
        summary.wall_s = time.perf_counter() - started
    return summary
