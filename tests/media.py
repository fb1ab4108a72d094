"""Test media built from real face photos that ship inside installed packages (no downloads, nothing committed).

``make_face_video(path, ...)`` writes an OpenCV (mp4v) clip of one or more real portraits moving and scaling
over a textured background and returns the ground-truth face rectangles per frame (where each pasted portrait
lies; the detector's box is a sub-rectangle of it). ``face_image(name)`` returns the portrait as BGR uint8.
Portraits: "grace_hopper" (matplotlib's sample data) and "astronaut" (scikit-image, used only when installed).
``FlakyCamera`` stands in for a webcam that gets unplugged (no camera exists on CI machines): a real
``cv2.VideoCapture`` over a clip that stops delivering after some frames, or refuses to open.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

FACES = ("grace_hopper", "astronaut")


def face_image(name: str = "grace_hopper") -> np.ndarray:
    """A real portrait photo as BGR uint8 (H x W x 3), cropped to head and shoulders."""
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        img = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
        if img is None:
            raise FileNotFoundError("matplotlib's sample grace_hopper.jpg could not be read")
        return img[60:460, 56:456]  # 400 x 400 around the face (face box ~ x171 y146 194x194 in the original)
    if name == "astronaut":
        try:
            from skimage import data
        except ImportError as e:
            raise FileNotFoundError("scikit-image is not installed; use face 'grace_hopper'") from e
        return cv2.cvtColor(data.astronaut()[30:230, 124:324], cv2.COLOR_RGB2BGR)  # face ~ x177 y82 95x95
    raise ValueError(f"unknown face {name!r}; choose one of {FACES}")


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth textured BGR background (gradients plus blurred noise), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([80 + 60 * xx / width, 90 + 50 * yy / height, 120 - 40 * xx / width], axis=-1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 6)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Placement:
    """Where one portrait was pasted in one frame: top-left x, y and side in pixels."""

    x: int
    y: int
    side: int


def make_face_video(path: str | Path, *, frames: int = 30, size: tuple[int, int] = (480, 360), fps: float = 15.0,
                    faces: Sequence[str] = ("grace_hopper",), face_side: tuple[float, float] = (150, 190),
                    path_xy: Sequence[tuple[tuple[float, float], tuple[float, float]]] | None = None,
                    scales: Sequence[float] | None = None, seed: int = 0) -> list[list[Placement]]:
    """Write an mp4v clip of ``faces`` moving linearly and scaling over a background; return placements.

    ``size`` is (width, height). Each face moves from its start to its end centre (``path_xy`` as fractions of
    the frame; default: left-to-right for one face, side by side for several) while its side grows linearly
    from ``face_side[0]`` to ``face_side[1]`` pixels (times ``scales[k]`` for face k). Returns, per frame,
    one Placement per face.
    """
    path = Path(path)
    w, h = size
    if path_xy is None:
        n = len(faces)
        path_xy = [((0.25 + 0.5 * i / max(n, 1), 0.45), (0.35 + 0.5 * i / max(n, 1), 0.55)) if n > 1
                   else ((0.35, 0.45), (0.65, 0.55)) for i in range(n)]
    portraits = [face_image(f) for f in faces]
    scales = list(scales) if scales is not None else [1.0] * len(faces)
    if len(scales) != len(faces) or len(path_xy) != len(faces):
        raise ValueError("give one scale and one path per face")
    bg = background(w, h, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    out: list[list[Placement]] = []
    try:
        for i in range(frames):
            a = i / max(frames - 1, 1)
            frame = bg.copy()
            placed = []
            for img, ((sx, sy), (ex, ey)), k in zip(portraits, path_xy, scales):
                side = int(round(k * (face_side[0] + a * (face_side[1] - face_side[0]))))
                cx, cy = (sx + a * (ex - sx)) * w, (sy + a * (ey - sy)) * h
                x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
                patch = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
                # paste, clipped to the frame
                fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
                if fx1 > fx0 and fy1 > fy0:
                    frame[fy0:fy1, fx0:fx1] = patch[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
                placed.append(Placement(x0, y0, side))
            writer.write(frame)
            out.append(placed)
    finally:
        writer.release()
    return out


def make_image_folder(folder: str | Path, *, frames: int = 5, size: tuple[int, int] = (480, 360),
                      face: str = "grace_hopper") -> Path:
    """Write ``frames`` PNG stills of a portrait over the background (numbered 000.png ...) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    img = face_image(face)
    for i in range(frames):
        frame = background(w, h, seed=i)
        side = min(w, h) // 2
        x0, y0 = w // 4 + 5 * i, h // 4
        frame[y0:y0 + side, x0:x0 + side] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return folder


class FlakyCamera:
    """A real ``cv2.VideoCapture`` on a clip that dies after ``fail_after`` frames, as an unplugged webcam does.

    Like a camera it never ends (the clip rewinds) and delivers at most ``fps`` frames a second (``read``
    blocks until the next frame is due). ``opens=False`` makes ``isOpened()`` report False (the device is still
    gone). Use it through a factory: ``VideoCaptureSource(0, capture_factory=lambda s: FlakyCamera(clip))``.
    """

    def __init__(self, path: str | Path, fail_after: int | None = None, opens: bool = True, fps: float = 30.0):
        self.cap = cv2.VideoCapture(str(path))
        self.fail_after, self.opens, self.reads, self.period = fail_after, opens, 0, 1.0 / fps
        self._due = time.monotonic()

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's name)
        return self.opens and self.cap.isOpened()

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            return False, None
        time.sleep(max(0.0, self._due - time.monotonic()))
        self._due = max(self._due + self.period, time.monotonic())
        ok, image = self.cap.read()
        if not ok:  # rewind: a camera does not run out of frames
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self.cap.read()
        return ok, image

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def set(self, prop: int, value: float) -> bool:
        return self.cap.set(prop, value)

    def release(self) -> None:
        self.cap.release()
