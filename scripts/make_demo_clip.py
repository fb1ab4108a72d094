"""Rebuild the bundled stakeholder demo clip (assets/demo.mp4) and its ground-truth sidecar (assets/demo.json).

The clip shows only two public-domain portraits that ship inside packages the project already installs:
matplotlib's ``grace_hopper.jpg`` (US Navy photograph, a US-government work) and scikit-image's
``astronaut()`` (NASA photograph of Eileen Collins). Everything else (room, paper, screen, glare, noise) is
drawn procedurally here, so the clip contains no person without a licence to show them.

Four labelled segments of equal length, in this order:

1. ``live``: the portrait cut out of its background and composited into a procedural room, moving like a
   person in front of a webcam (small translation, scale, roll and 3-D yaw/pitch wobble, breathing), with
   sensor noise, auto-exposure drift, a moving side light and lens blur.
2. ``print``: the portrait printed on a sheet with a white margin, halftone dots, compressed dynamic range and a
   warm cast, bent like paper, with a moving specular sheen, held in front of the camera (rigid motion).
3. ``replay``: the portrait on a tablet screen: bezel, RGB sub-pixel grid resampled without anti-aliasing
   (moire), colour-temperature shift, glare and a room reflection, rolling refresh bands, perspective.
4. ``faceswap``: the astronaut's face seamlessly cloned (``cv2.seamlessClone``) onto Grace Hopper's head in the
   live-camera scene, smoothed like a GAN output, noise-free where the face was pasted, with a blend boundary
   that jitters from frame to frame.

Usage::

    python scripts/make_demo_clip.py                      # writes assets/demo.mp4 and assets/demo.json
    python scripts/make_demo_clip.py --out /tmp/d.mp4 --seconds 20 --fps 10 --size 480x360 --seed 1

The output is deterministic for a given seed and set of arguments (all randomness comes from numpy
Generators seeded from ``--seed``, and OpenCV's RNG for GrabCut is seeded too).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "assets" / "demo.mp4"

# Face keypoints (x, y) in source pixels, measured once with the mediapipe short-range FaceDetector
# (right eye, left eye, nose tip, mouth centre). Used to align the face swap.
GRACE_KEYPOINTS = np.float32([[222, 195], [308, 185], [268, 226], [273, 274]])
ASTRONAUT_KEYPOINTS = np.float32([[201, 105], [246, 109], [220, 127], [220, 149]])
GRACE_FACE_CENTRE = (266.0, 240.0)  # centre of the detector box (171, 146, 194, 194) in grace_hopper.jpg


@dataclass(frozen=True)
class Segment:
    """One labelled stretch of the clip: what is shown and its ground truth."""

    name: str
    label: str  # "live" | "attack"
    attack_type: str  # vocabulary of shared/data: none | print | replay | faceswap
    caption: str
    description: str


SEGMENTS = (
    Segment("live", "live", "none", "1/4 live",
            "Grace Hopper portrait composited into a room and animated like a webcam capture"),
    Segment("print", "attack", "print", "2/4 print attack",
            "the same portrait printed on a bent sheet with a white margin, held in front of the camera"),
    Segment("replay", "attack", "replay", "3/4 screen replay attack",
            "the same portrait shown on a tablet screen (bezel, moire, glare, refresh bands)"),
    Segment("faceswap", "attack", "faceswap", "4/4 digital attack (face swap)",
            "the astronaut's face seamlessly cloned onto Grace Hopper's head in the live scene"),
)


# ----------------------------------------------------------------------------------------------- sources
def load_portraits() -> tuple[np.ndarray, np.ndarray]:
    """Return (grace_hopper, astronaut) as BGR uint8 arrays from the installed matplotlib and scikit-image.

    Both images are public domain and are read from the packages' bundled sample data, never downloaded.
    Raises ImportError with an install hint when scikit-image is missing.
    """
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    grace = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if grace is None:
        raise FileNotFoundError(f"matplotlib sample image {path} could not be read; reinstall matplotlib")
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("scikit-image is needed for the astronaut portrait: "
                          "`.venv/bin/pip install -r requirements-dev.txt`") from e
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return grace, astronaut


def person_matte(img: np.ndarray) -> np.ndarray:
    """Soft foreground matte (H W float32 in [0, 1]) of the sitter in grace_hopper.jpg, via seeded GrabCut.

    GrabCut starts from a hand-drawn head-and-shoulders outline (definite foreground inside, probable
    foreground on its border, definite background at the flag and sky corners) and refines the edge.
    """
    h, w = img.shape[:2]
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    # Outline in source pixels: cap, head, neck, shoulders widening to the bottom edge.
    outline = np.int32([[150, 60], [200, 20], [330, 22], [375, 70], [378, 200], [365, 300], [345, 330],
                        [420, 360], [490, 420], [512, 460], [512, 600], [0, 600], [0, 470], [60, 400],
                        [150, 350], [165, 300], [150, 210]])
    cv2.fillPoly(mask, [outline], cv2.GC_PR_FGD)
    band = cv2.dilate((mask == cv2.GC_PR_FGD).astype(np.uint8), np.ones((31, 31), np.uint8))
    mask[(band > 0) & (mask == cv2.GC_BGD)] = cv2.GC_PR_BGD
    core = cv2.erode((mask == cv2.GC_PR_FGD).astype(np.uint8), np.ones((41, 41), np.uint8))
    mask[core > 0] = cv2.GC_FGD
    # Known background the colour model confuses with the sitter: the flag's gold fringe beside the neck
    # and the star above the cap.
    fringe = np.int32([[100, 190], [148, 190], [150, 250], [157, 292], [190, 305], [196, 335], [170, 350],
                       [100, 350]])
    cv2.fillPoly(mask, [fringe], cv2.GC_BGD)
    mask[:18] = cv2.GC_BGD
    cv2.setRNGSeed(12345)  # GrabCut's GMM initialisation uses OpenCV's RNG
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(img, mask, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    # Keep the largest component (drops stray flag stripes), close holes, feather the edge by ~2 px.
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n > 1:
        fg = (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    return cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.5)


PAD = 200  # columns added on each side of the portrait so the shoulders do not end at the photo's edge
CROP_LEFT = 40  # grace_hopper.jpg shows flag, not uniform, in its first 40 columns down to the bottom edge


def widen_person(img: np.ndarray, matte: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Extend a portrait (H W C float) and optionally its matte sideways by PAD columns of shoulder.

    grace_hopper.jpg cuts the sitter's shoulders at its left and right edges; composited as is, the body
    would end in two vertical lines. The first CROP_LEFT columns (flag) are dropped, then the edge columns
    are repeated outwards and darkened, and the matte slopes down from where the body meets each edge, like
    a shoulder turning into an arm. The face centre moves right by ``PAD - CROP_LEFT``. Returns
    (image, matte or None).
    """
    img = img[:, CROP_LEFT:]
    h, w = img.shape[:2]
    wide = cv2.copyMakeBorder(img, 0, 0, PAD, PAD, cv2.BORDER_REPLICATE)
    d = np.concatenate([np.arange(PAD, 0, -1), np.zeros(w), np.arange(1, PAD + 1)]).astype(np.float32)
    shade = 1.0 - 0.25 * d / PAD
    wide = wide * (shade[None, :, None] if wide.ndim == 3 else shade[None, :])
    if matte is None:
        return wide, None
    matte = matte[:, CROP_LEFT:]
    out = cv2.copyMakeBorder(matte, 0, 0, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
    yy = np.arange(h, dtype=np.float32)[:, None]
    for col, side in ((0, slice(0, PAD)), (w - 1, slice(PAD + w, None))):
        # First row from which the edge column stays body for 20 rows (ignores stray matte specks).
        body = matte[:, col] > 0.5
        run = np.convolve(body.astype(np.float32), np.ones(20), mode="full")[19:]
        rows = np.nonzero(run >= 20)[0]
        if rows.size == 0:
            continue
        dd = d[side][None, :]
        top = float(rows[0]) + 0.6 * dd + 0.002 * dd ** 2  # shoulder falls away, steeper further out
        out[:, side] = np.clip((yy - top) / 3.0, 0, 1)
    return wide, cv2.GaussianBlur(out, (0, 0), 1.0)


@functools.lru_cache(maxsize=1)
def prepared_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grace, astronaut, grace matte) as read-only arrays, computed once per process (GrabCut takes ~2 s)."""
    grace, astro = load_portraits()
    matte = person_matte(grace)
    for a in (grace, astro, matte):
        a.setflags(write=False)
    return grace, astro, matte


# -------------------------------------------------------------------------------------------- geometry
def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation matrix from angles in radians (yaw about y, pitch about x, roll about the optical axis)."""
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), \
        math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def plane_homography(src_size: tuple[int, int], anchor_src: tuple[float, float], anchor_dst: tuple[float, float],
                     scale: float, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                     focal: float = 900.0) -> np.ndarray:
    """Homography (3x3) that images a flat picture as a plane rotated in 3-D in front of a pinhole camera.

    The source point ``anchor_src`` lands on ``anchor_dst``; at zero rotation the picture is scaled by
    ``scale``. ``focal`` in output pixels sets how strong the perspective of a rotation is.
    """
    w, h = src_size
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    p = np.zeros((4, 3))
    p[:, :2] = (corners - np.float32(anchor_src)) * scale  # 4 x 3 plane points, camera units
    q = p @ rotation(yaw, pitch, roll).T + np.array([0.0, 0.0, focal])
    proj = focal * q[:, :2] / q[:, 2:3] + np.float32(anchor_dst)
    return cv2.getPerspectiveTransform(corners, proj.astype(np.float32))


def warp(img: np.ndarray, hom: np.ndarray, size: tuple[int, int], interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp a float image (H W C or H W) by a homography into an output of ``size`` = (W, H), zero outside."""
    return cv2.warpPerspective(img, hom, size, flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def over(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite float images: H W 3 foreground over background with an H W alpha."""
    a = alpha[..., None]
    return fg * a + bg * (1.0 - a)


class Wobble:
    """Smooth deterministic pseudo-random signal: a sum of three sines with random frequencies and phases.

    ``Wobble(rng, amp, fmax)(t)`` stays within about +-amp and varies at most at ``fmax`` Hz, which is how a
    head or a hand-held object drifts (no jumps between frames).
    """

    def __init__(self, rng: np.random.Generator, amp: float, fmax: float = 0.5) -> None:
        self.f = rng.uniform(0.15, 1.0, 3) * fmax
        self.ph = rng.uniform(0, 2 * np.pi, 3)
        self.w = rng.dirichlet(np.ones(3)) * amp

    def __call__(self, t: float) -> float:
        return float(np.sum(self.w * np.sin(2 * np.pi * self.f * t + self.ph)))


# ----------------------------------------------------------------------------------------------- scene
def make_room(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Procedural office background (H W 3 float32 BGR in [0, 1]): wall, window with blinds, shelf, picture.

    Drawn sharp and then defocused, as a webcam focused on a face at arm's length would see it.
    """
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.array([0.62, 0.70, 0.76], np.float32)  # warm beige (BGR)
    light = 0.75 + 0.35 * np.exp(-((xx - 0.05 * w) ** 2 + (yy - 0.3 * h) ** 2) / (2 * (0.45 * w) ** 2))
    room = wall[None, None, :] * (light * (1.0 - 0.12 * yy / h))[..., None]
    room += rng.normal(0, 0.012, (h, w, 1)).astype(np.float32)  # plaster texture
    # Window on the left with venetian blinds: bright, slightly blue daylight.
    x0, x1, y0, y1 = int(0.03 * w), int(0.25 * w), int(0.08 * h), int(0.62 * h)
    cv2.rectangle(room, (x0 - 8, y0 - 8), (x1 + 8, y1 + 8), (0.85, 0.86, 0.88), -1)
    room[y0:y1, x0:x1] = (0.98, 0.97, 0.93)
    for y in range(y0 + 4, y1, 11):
        room[y:y + 4, x0:x1] *= 0.80
    # Bookshelf on the right: dark wood frame, three shelves of books with random colours and widths.
    sx0, sx1, sy0 = int(0.74 * w), int(0.99 * w), int(0.12 * h)
    cv2.rectangle(room, (sx0, sy0), (sx1, h), (0.17, 0.25, 0.33), -1)
    shelf_h = int(0.2 * h)
    for k in range(4):
        top = sy0 + 10 + k * shelf_h
        x = sx0 + 8
        while x < sx1 - 14:
            bw = int(rng.integers(7, 16))
            bh = int(rng.integers(int(0.6 * shelf_h), shelf_h - 14))
            hue = rng.uniform(0.1, 0.7, 3)
            colour = tuple(float(c) for c in 0.55 * hue + 0.45 * hue.mean())  # muted book spines
            cv2.rectangle(room, (x, top + shelf_h - 10 - bh), (x + bw, top + shelf_h - 10), colour, -1)
            x += bw + int(rng.integers(1, 3))
        cv2.rectangle(room, (sx0, top + shelf_h - 10), (sx1, top + shelf_h - 2), (0.22, 0.32, 0.42), -1)
    # Abstract framed print on the wall (coloured blocks only, no figures).
    px0, py0, px1, py1 = int(0.36 * w), int(0.06 * h), int(0.62 * w), int(0.28 * h)
    cv2.rectangle(room, (px0 - 6, py0 - 6), (px1 + 6, py1 + 6), (0.15, 0.15, 0.16), -1)
    room[py0:py1, px0:px1] = (0.90, 0.92, 0.93)
    for _ in range(6):
        bx, by = int(rng.integers(px0, px1 - 20)), int(rng.integers(py0, py1 - 12))
        colour = tuple(float(c) for c in rng.uniform(0.2, 0.9, 3))
        cv2.rectangle(room, (bx, by), (min(bx + int(rng.integers(15, 60)), px1), min(by + int(rng.integers(10, 40)),
                                                                                        py1)), colour, -1)
    # Desk lamp glow in the lower right corner.
    room += (0.10 * np.exp(-((xx - w) ** 2 + (yy - h) ** 2) / (2 * (0.25 * w) ** 2)))[..., None] * \
        np.array([0.6, 0.9, 1.0], np.float32)
    room = cv2.GaussianBlur(np.clip(room, 0, 1), (0, 0), 2.2)
    return room.astype(np.float32)


def camera(frame: np.ndarray, rng: np.random.Generator, gain: float = 1.0,
           noise_scale: np.ndarray | float = 1.0, blur: float = 0.7) -> np.ndarray:
    """Webcam capture model on a float BGR frame in [0, 1]: lens blur, vignette, exposure, shot/read noise.

    ``noise_scale`` (scalar or H W map) attenuates the noise, e.g. where a face swap pasted noise-free pixels.
    Returns the captured frame as BGR uint8.
    """
    h, w = frame.shape[:2]
    if blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    frame = frame * (1.0 - 0.18 * r2)[..., None] * gain
    # Shot noise grows with sqrt(signal); read noise is flat; a little chroma noise (Bayer demosaicing).
    sigma = np.sqrt(0.0004 * np.clip(frame, 0, 1) + 0.00008)
    ns = noise_scale[..., None] if isinstance(noise_scale, np.ndarray) else noise_scale
    frame = frame + ns * sigma * (rng.standard_normal((h, w, 1)) * 0.8 + rng.standard_normal((h, w, 3)) * 0.45)
    return (np.clip(frame, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def put_caption(frame: np.ndarray, text: str) -> None:
    """Draw a small segment caption in the bottom-left corner (in place), away from the face."""
    h = frame.shape[0]
    scale = max(0.35, h / 960)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = 6, h - 8
    roi = frame[y - th - 5:y + base + 1, x - 3:x + tw + 4]
    roi[:] = (roi * 0.4).astype(np.uint8)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)


# ------------------------------------------------------------------------------------------- renderers
class DemoRenderer:
    """Renders every frame of the four segments at output size ``size`` = (W, H); deterministic per seed."""

    def __init__(self, size: tuple[int, int], seed: int) -> None:
        self.size = size
        self.seed = seed
        self.k = size[1] / 480.0  # geometry below is designed at 640 x 480 and scaled with the height
        grace, astro, matte = prepared_sources()
        self.grace = grace.astype(np.float32) / 255.0
        self.astro = astro.astype(np.float32) / 255.0
        _, self.matte = widen_person(self.grace, matte)  # matte of the widened portrait
        rng = np.random.default_rng([seed, 0])
        self.room = make_room(size, rng)  # static: the webcam is on a desk, only the subject moves
        self.motion = {name: {p: Wobble(rng, a, f) for p, (a, f) in params.items()} for name, params in {
            "live": {"x": (14, 0.35), "y": (8, 0.4), "s": (0.05, 0.2), "yaw": (0.22, 0.3), "pitch": (0.10, 0.35),
                     "roll": (0.06, 0.3), "light": (0.35, 0.15), "gain": (0.06, 0.1)},
            "print": {"x": (18, 0.5), "y": (10, 0.5), "s": (0.04, 0.3), "yaw": (0.30, 0.4), "pitch": (0.18, 0.4),
                      "roll": (0.08, 0.5), "bend": (0.5, 0.3), "sheen": (1.0, 0.2), "gain": (0.05, 0.1)},
            "replay": {"x": (16, 0.5), "y": (10, 0.5), "s": (0.04, 0.3), "yaw": (0.28, 0.4), "pitch": (0.15, 0.4),
                       "roll": (0.07, 0.5), "glare": (1.0, 0.15), "gain": (0.04, 0.1)},
            "faceswap": {"x": (14, 0.35), "y": (8, 0.4), "s": (0.05, 0.2), "yaw": (0.18, 0.3),
                         "pitch": (0.08, 0.35), "roll": (0.05, 0.3), "light": (0.3, 0.15), "gain": (0.05, 0.1)},
        }.items()}
        self.sheet = self._make_sheet()
        self.screen = self._make_screen()
        self.swap_src = self._prepare_swap_source()

    # ---- live person (also the base of the face swap)
    def _person_frame(self, portrait: np.ndarray, t: float, m: dict[str, Wobble]) -> tuple[np.ndarray, np.ndarray]:
        """Composite the cut-out portrait into the room; returns (scene H W 3 float, homography used)."""
        w, h = self.size
        k = self.k
        scale = 0.92 * k * (1.0 + m["s"](t) + 0.008 * math.sin(2 * math.pi * 0.25 * t))  # + breathing
        anchor = (w / 2 + k * m["x"](t), 0.43 * h + k * m["y"](t) + k * 2.0 * math.sin(2 * math.pi * 0.25 * t))
        portrait, _ = widen_person(portrait)
        hom = plane_homography((portrait.shape[1], portrait.shape[0]), (GRACE_FACE_CENTRE[0] + PAD - CROP_LEFT,
                                                                        GRACE_FACE_CENTRE[1]), anchor, scale,
                               m["yaw"](t), m["pitch"](t), m["roll"](t), focal=900 * k)
        # Side light: a horizontal gain ramp across the sitter that drifts as a cloud passes the window.
        xs = np.linspace(-1, 1, portrait.shape[1], dtype=np.float32)
        lit = portrait * (1.0 + (0.12 + 0.5 * m["light"](t)) * -xs)[None, :, None]
        fg = warp(lit, hom, self.size)
        alpha = warp(self.matte, hom, self.size)
        return over(self.room, fg, alpha), hom

    def live(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """A frame of the bona fide segment: the portrait as a person moving in front of the webcam."""
        m = self.motion["live"]
        scene, _ = self._person_frame(self.grace, t, m)
        return camera(scene, rng, gain=1.0 + m["gain"](t))

    # ---- print attack
    def _make_sheet(self) -> np.ndarray:
        """The printed sheet (H W 4 float: BGR + alpha): margin, halftone, low dynamic range, warm cast."""
        img = self.grace
        h, w = img.shape[:2]
        margin, foot = 34, 120
        sheet = np.ones((h + margin + foot, w + 2 * margin, 3), np.float32) * np.float32([0.90, 0.95, 0.97])
        # Inkjet on plain paper: blacks lifted, whites capped at the paper, muted saturation, warm cast.
        grey = img.mean(axis=2, keepdims=True)
        ink = 0.75 * img + 0.25 * grey
        ink = 0.10 + 0.80 * ink ** 0.9
        ink = ink * np.float32([0.90, 0.97, 1.03])
        # Halftone: a 45-degree dot screen with a 4-pixel period modulating the ink coverage.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dots = 0.5 + 0.5 * np.cos(2 * np.pi * (xx + yy) / (4 * math.sqrt(2))) * np.cos(
            2 * np.pi * (xx - yy) / (4 * math.sqrt(2)))
        ink = ink * (1.0 - 0.10 * (dots[..., None] - 0.5) * (1.2 - ink))
        sheet[margin:margin + h, margin:margin + w] = ink
        # A printed caption under the photo: grey bars that read as lines of text.
        rng = np.random.default_rng([self.seed, 1])
        for line in range(3):
            y = margin + h + 22 + line * 22
            x = margin
            while x < w + margin - 30:
                ww = int(rng.integers(12, 48))
                cv2.rectangle(sheet, (x, y), (min(x + ww, w + margin), y + 8), (0.35, 0.35, 0.38), -1)
                x += ww + 8
        grain = np.random.default_rng([self.seed, 2]).normal(0, 0.015, sheet.shape[:2]).astype(np.float32)
        sheet = np.clip(sheet + cv2.GaussianBlur(grain, (0, 0), 0.8)[..., None], 0, 1)
        alpha = np.ones(sheet.shape[:2], np.float32)
        return np.dstack([sheet, alpha])

    def print_attack(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """A frame of the print attack: the sheet bent, lit with a moving sheen, moved rigidly by a hand."""
        m = self.motion["print"]
        w, h = self.size
        k = self.k
        sheet = self.sheet
        sh, sw = sheet.shape[:2]
        # Paper bend about a vertical axis: sides curl towards the camera (taller, foreshortened, shaded).
        bend = 0.10 + 0.05 * m["bend"](t)
        pad = int(0.12 * sh)
        yy, xx = np.mgrid[0:sh + 2 * pad, 0:sw].astype(np.float32)
        u = (xx - sw / 2) / (sw / 2)  # -1 .. 1 across the sheet
        mag = 1.0 + bend * u ** 2
        map_x = (sw / 2 + (xx - sw / 2) * (1.0 + 0.4 * bend * u ** 2)).astype(np.float32)
        map_y = (sh / 2 + (yy - pad - sh / 2) / mag).astype(np.float32)
        bent = cv2.remap(sheet, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        shade = 1.0 - 0.18 * bend / 0.15 * np.clip(u, 0, 1) ** 2 + 0.06 * np.clip(-u, 0, 1)
        # Specular sheen: a soft diagonal band sliding across as the sheet tilts.
        c = 0.6 * m["sheen"](t)
        band = np.exp(-((u + 0.3 * (yy / bent.shape[0] - 0.5)) - c) ** 2 / (2 * 0.12 ** 2))
        rgb = bent[..., :3] * shade[..., None] + 0.22 * band[..., None]
        hom = plane_homography((sw, bent.shape[0]), (sw / 2 - 14, pad + 34 + GRACE_FACE_CENTRE[1]),
                               (w / 2 + k * m["x"](t), 0.45 * h + k * m["y"](t)), 0.66 * k * (1 + m["s"](t)),
                               m["yaw"](t), m["pitch"](t), m["roll"](t), focal=900 * k)
        fg = warp(np.clip(rgb, 0, 1.2), hom, self.size)
        alpha = warp(bent[..., 3], hom, self.size)
        scene = over(self.room, fg, alpha)
        return camera(scene, rng, gain=1.0 + m["gain"](t))

    # ---- screen replay attack
    def _make_screen(self) -> tuple[np.ndarray, tuple[float, float]]:
        """Tablet texture (H W 4 float) in portrait orientation and the face centre in its pixels.

        The portrait is shown at 300 x 400 display pixels; each display pixel is drawn as a 3 x 3 block of
        R, G, B sub-pixel stripes with a dark gap, so downsampling it without anti-aliasing produces moire.
        """
        img = self.grace
        h, w = img.shape[:2]
        crop_w = int(h * 3 / 4)  # 3:4 screen, crop the sides of the 512 x 600 portrait
        x0 = (w - crop_w) // 2
        shown = cv2.resize(img[:, x0:x0 + crop_w], (300, 400), interpolation=cv2.INTER_AREA)
        # Display colour: cool white point, lifted blacks (backlight), a touch of extra contrast in mids.
        shown = np.clip(0.05 + 0.95 * shown ** 0.95, 0, 1) * np.float32([1.10, 1.0, 0.88])
        sub = 3
        big = np.repeat(np.repeat(shown, sub, axis=0), sub, axis=1)  # 1200 x 900 x 3
        mask = np.zeros((sub, sub, 3), np.float32)
        for ch, col in zip((2, 1, 0), range(3)):  # R G B stripes left to right (BGR channel order)
            mask[:sub - 1, col, ch] = 1.0
        grid = np.tile(mask, (400, 300, 1))
        grid = grid / grid.mean(axis=(0, 1), keepdims=True)  # mean 1 per channel: same brightness overall
        # Partial contrast: the camera lens blurs the sub-pixels before the sensor samples them.
        texture = big * (0.82 + 0.18 * grid)
        bezel = 54
        th, tw = texture.shape[0] + 2 * bezel, texture.shape[1] + 2 * bezel
        dev = np.zeros((th, tw, 4), np.float32)
        dev[..., :3] = (0.07, 0.07, 0.08)  # black glass bezel
        # Rounded corners: cut the four corners out of the alpha.
        r = 40
        corner = np.zeros((th, tw), np.uint8)
        cv2.rectangle(corner, (r, 0), (tw - r, th), 1, -1)
        cv2.rectangle(corner, (0, r), (tw, th - r), 1, -1)
        for cx, cy in ((r, r), (tw - r, r), (r, th - r), (tw - r, th - r)):
            cv2.circle(corner, (cx, cy), r, 1, -1, cv2.LINE_AA)
        cv2.rectangle(dev, (3, 3), (tw - 4, th - 4), (0.25, 0.25, 0.27, 1.0), 2, cv2.LINE_AA)  # metal rim
        dev[..., 3] = corner.astype(np.float32)
        cv2.circle(dev, (tw // 2, bezel // 2), 5, (0.12, 0.1, 0.1, 1.0), -1)  # front camera
        dev[bezel:bezel + texture.shape[0], bezel:bezel + texture.shape[1], :3] = texture
        face = ((GRACE_FACE_CENTRE[0] - x0) * 300 / crop_w * sub + bezel, GRACE_FACE_CENTRE[1] * 400 / h * sub + bezel)
        return dev, face

    def replay_attack(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """A frame of the replay attack: tablet held up with glare, reflection and rolling refresh bands."""
        m = self.motion["replay"]
        w, h = self.size
        k = self.k
        dev, face = self.screen
        dh, dw = dev.shape[:2]
        rgb = dev[..., :3].copy()
        yy = np.arange(dh, dtype=np.float32)[:, None, None]
        xx = np.arange(dw, dtype=np.float32)[None, :, None]
        # Rolling refresh band (camera exposure and display PWM beat): dark bands sliding down the screen.
        rgb *= 1.0 - 0.10 * (0.5 + 0.5 * np.sin(2 * np.pi * (yy / (0.45 * dh) - 0.7 * t)))
        # Glare: a broad bright diagonal lobe that drifts with the tilt, plus a faint mirror image of the room.
        c = 0.3 + 0.25 * m["glare"](t)
        lobe = np.exp(-(((xx / dw) - c) + 0.6 * ((yy / dh) - 0.3)) ** 2 / (2 * 0.16 ** 2))
        refl = cv2.resize(cv2.flip(self.room, 1), (dw, dh))
        rgb = rgb + 0.16 * lobe * np.float32([1.0, 0.98, 0.95]) + 0.10 * refl
        hom = plane_homography((dw, dh), face, (w / 2 + k * m["x"](t), 0.43 * h + k * m["y"](t)),
                               0.36 * k * (1 + m["s"](t)), m["yaw"](t), m["pitch"](t), m["roll"](t), focal=900 * k)
        # INTER_LINEAR without prefiltering: the 3x3 sub-pixel grid aliases into moire, as a camera sensor does.
        fg = warp(rgb, hom, self.size, cv2.INTER_LINEAR)
        alpha = warp(dev[..., 3], hom, self.size)
        scene = over(self.room, fg, alpha)
        return camera(scene, rng, gain=1.0 + m["gain"](t), blur=0.5)

    # ---- digital attack (face swap)
    def _prepare_swap_source(self) -> np.ndarray:
        """Astronaut aligned onto Grace Hopper's face (similarity fit on four keypoints), GAN-like smoothed."""
        mat, _ = cv2.estimateAffinePartial2D(ASTRONAUT_KEYPOINTS, GRACE_KEYPOINTS, method=cv2.LMEDS)
        h, w = self.grace.shape[:2]
        aligned = cv2.warpAffine(self.astro, mat, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        # Generator-style smoothing: edge-preserving filter removes skin texture, keeps features.
        smooth = cv2.bilateralFilter(aligned, 9, 0.12, 5)
        # Colour mismatch left by a swap model trained on other lighting: slightly warmer and brighter.
        return np.clip(smooth * np.float32([0.92, 1.0, 1.08]) + 0.02, 0, 1)

    def faceswap(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """A frame of the digital attack: per-frame seamless clone with a jittering mask, then the camera model.

        The face region is pasted after capture (as a swap on the video stream does), so it carries much
        less sensor noise than its surroundings.
        """
        m = self.motion["faceswap"]
        grace8 = (self.grace * 255 + 0.5).astype(np.uint8)
        src8 = (self.swap_src * 255 + 0.5).astype(np.uint8)
        h, w = grace8.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        jit = rng.normal(0, 1.2, 4)  # per-frame jitter (px) of the blend boundary
        centre = (int(round(265 + jit[0])), int(round(242 + jit[1])))
        axes = (int(round(66 + jit[2])), int(round(86 + jit[3])))
        cv2.ellipse(mask, centre, axes, -4.0, 0, 360, 255, -1)
        x, y, bw, bh = cv2.boundingRect(mask)
        swapped = cv2.seamlessClone(src8, grace8, mask, (x + bw // 2, y + bh // 2), cv2.NORMAL_CLONE)
        portrait = swapped.astype(np.float32) / 255.0
        scene, hom = self._person_frame(portrait, t, m)
        clean = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 3)
        clean = cv2.copyMakeBorder(clean[:, CROP_LEFT:], 0, 0, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
        noise_scale = 1.0 - 0.85 * warp(clean, hom, self.size)
        return camera(scene, rng, gain=1.0 + m["gain"](t), noise_scale=noise_scale)


# --------------------------------------------------------------------------------------------------- main
def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``640x480``) into (W, H); raises argparse.ArgumentTypeError on bad input."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from e
    if w < 160 or h < 120 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"--size {text!r}: need even sides of at least 160x120")
    return w, h


def build(out: Path, seconds: float, fps: float, size: tuple[int, int], seed: int,
          bitrate_kbps: int = 1400) -> dict:
    """Render the clip to ``out`` (mp4v) and its sidecar next to it (same stem, .json); return the sidecar dict.

    ``bitrate_kbps`` caps the MPEG-4 bitrate (1400 kbit/s keeps 40 s at 640 x 480 near 7 MB; OpenCV's own
    default of about fps x W x H bit/s would write ~13 MB).
    """
    if seconds < 4 or fps <= 0:
        raise ValueError(f"--seconds {seconds} / --fps {fps}: need at least 4 s (1 s per segment) and fps > 0")
    if bitrate_kbps < 100:
        raise ValueError(f"--bitrate {bitrate_kbps}: give kbit/s, at least 100 (default 1400)")
    out.parent.mkdir(parents=True, exist_ok=True)
    per_seg = int(round(seconds * fps / len(SEGMENTS)))
    writer = cv2.VideoWriter(str(out), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, size,
                             [cv2.VIDEOWRITER_PROP_BITRATE, int(bitrate_kbps * 1000)])
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an mp4v writer for {out}; check the folder is writable")
    renderer = DemoRenderer(size, seed)
    render = {"live": renderer.live, "print": renderer.print_attack, "replay": renderer.replay_attack,
              "faceswap": renderer.faceswap}
    segments = []
    frame_no = 0
    try:
        for si, seg in enumerate(SEGMENTS):
            start = frame_no
            for i in range(per_seg):
                rng = np.random.default_rng([seed, 100 + si, i])  # per-frame stream: order-independent
                frame = render[seg.name](i / fps, rng)
                put_caption(frame, seg.caption)
                writer.write(frame)
                frame_no += 1
            segments.append({"name": seg.name, "label": seg.label, "attack_type": seg.attack_type,
                             "start": round(start / fps, 4), "end": round(frame_no / fps, 4),
                             "start_frame": start, "end_frame": frame_no, "caption": seg.caption,
                             "description": seg.description})
            logger.info("segment %s: frames %d..%d", seg.name, start, frame_no - 1)
    finally:
        writer.release()
    sidecar = {
        "video": out.name, "fps": fps, "frames": frame_no, "seconds": round(frame_no / fps, 4),
        "size": list(size), "codec": "mp4v", "bitrate_kbps": bitrate_kbps, "seed": seed,
        "labels": "label is the ground truth per segment (live = bona fide, attack = presentation or digital "
                  "attack); attack_type uses the vocabulary of the training manifest",
        "segments": segments,
        "sources": [
            {"name": "grace_hopper.jpg", "package": "matplotlib (mpl-data/sample_data)",
             "licence": "public domain (US Navy photograph, work of the US government)"},
            {"name": "astronaut", "package": "scikit-image (skimage.data.astronaut)",
             "licence": "public domain (NASA photograph of Eileen Collins)"},
        ],
        "rebuild": "python scripts/make_demo_clip.py" + ("" if out == DEFAULT_OUT else f" --out {out}")
                   + f" --seconds {seconds:g} --fps {fps:g} --size {size[0]}x{size[1]} --seed {seed}"
                   + ("" if bitrate_kbps == 1400 else f" --bitrate {bitrate_kbps}"),
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse arguments, build the clip, print where it went."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .mp4 (sidecar .json is written next "
                                                                  "to it); default assets/demo.mp4")
    ap.add_argument("--seconds", type=float, default=40.0, help="total length, split evenly over 4 segments")
    ap.add_argument("--fps", type=float, default=15.0, help="frames per second (default 15)")
    ap.add_argument("--size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    ap.add_argument("--seed", type=int, default=0, help="random seed; same seed, same clip")
    ap.add_argument("--bitrate", type=int, default=1400, help="MPEG-4 bitrate in kbit/s (default 1400, ~7 MB)")
    args = ap.parse_args(argv)
    if args.out.suffix.lower() != ".mp4":
        ap.error(f"--out {args.out}: must end in .mp4")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    side = build(args.out, args.seconds, args.fps, args.size, args.seed, args.bitrate)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({side['frames']} frames, {side['seconds']} s, {size_mb:.2f} MB) and "
          f"{args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
