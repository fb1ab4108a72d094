"""Augmentations for uint8 RGB face crops (numpy + OpenCV core; no GUI, no torch needed).

``TrainAugment`` is what the trainer applies to a 160 px contract crop (docs/architecture.md "Face crop") to get a model
input of ``size`` px: scale / shift jitter inside the crop's own context, horizontal flip, colour jitter, blur and
JPEG recompression, plus *simulated spoof clues* that turn a live crop into an attack sample (the 2024 unified
physical-digital challenge winner's recipe, docs/architecture.md): moire and colour distortion (physical: print / screen
recapture) and self-blending (digital: Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images",
CVPR 2022). ``EvalTransform`` only resizes, as the app's cropper does.

Every random choice comes from one ``numpy.random.Generator`` seeded by ``seed`` (one stream per DataLoader
worker), so a seed gives the same sequence of outputs. The single ops (``moire``, ``colour_distortion``,
``self_blend``, ``colour_jitter``, ``gaussian_blur``, ``jpeg``) are public and take an explicit generator.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import Sequence

import cv2
import numpy as np

from ..preprocess import check_crop, resize_crop

log = logging.getLogger(__name__)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luminance weights (RGB order)


# --- photometric ops --------------------------------------------------------------------------------------
def _hue_matrix(angle_rad: float) -> np.ndarray:
    """3 x 3 rotation of RGB about the grey axis (1, 1, 1) / sqrt(3): a hue shift that keeps grey grey."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    k = 1.0 / 3.0
    r = math.sqrt(k)
    # Rodrigues' formula with the unit axis (r, r, r)
    return np.array([[c + (1 - c) * k, (1 - c) * k - r * s, (1 - c) * k + r * s],
                     [(1 - c) * k + r * s, c + (1 - c) * k, (1 - c) * k - r * s],
                     [(1 - c) * k - r * s, (1 - c) * k + r * s, c + (1 - c) * k]], np.float32)


def _saturation_matrix(s: float) -> np.ndarray:
    """3 x 3 matrix mixing each pixel with its luminance: s = 0 grey, 1 identity, > 1 more saturated."""
    return (s * np.eye(3, dtype=np.float32) + (1.0 - s) * np.ones((3, 1), np.float32) * _LUMA[None]).astype(np.float32)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.2, contrast: float = 0.2,
                  saturation: float = 0.2, hue_deg: float = 8.0) -> np.ndarray:
    """Random brightness, contrast, saturation and hue as ONE 3 x 4 affine colour transform (one cv2 pass).

    Factors are drawn uniformly from [1 - x, 1 + x] (hue: an angle in [-hue_deg, hue_deg] degrees about the grey
    axis); contrast pivots on the crop's mean grey level. y = b * (c * (H S x - mu) + mu).
    """
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = rng.uniform(1 - saturation, 1 + saturation)
    h = math.radians(rng.uniform(-hue_deg, hue_deg))
    mu = float(image.mean())
    m = np.empty((3, 4), np.float32)
    m[:, :3] = (b * c) * (_hue_matrix(h) @ _saturation_matrix(s))
    m[:, 3] = b * (1 - c) * mu
    return cv2.transform(image, m)  # saturating uint8 output


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float] = (0.4, 1.4)) -> np.ndarray:
    """Gaussian blur with sigma drawn from ``sigma`` (pixels of this image): defocus / motion-free camera blur."""
    sd = rng.uniform(*sigma)
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sd, sigmaY=sd, borderType=cv2.BORDER_REFLECT_101)


def motion_blur(image: np.ndarray, rng: np.random.Generator, length: tuple[float, float] = (0.03, 0.15)) -> np.ndarray:
    """Linear motion blur: a line kernel of ``length`` x the image side (drawn), at a random angle.

    A live person turning the head in front of a webcam smears like this, while a phone held up to it is often
    steadier: without this, a model can learn "smeared = attack" from sets whose fakes are the blurrier ones and
    call every moving live face an attack (the inverted-room failure of issue 11).
    """
    h, w = image.shape[:2]
    n = max(3, int(round(rng.uniform(*length) * min(h, w))) | 1)  # odd, >= 3
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0)
    k = cv2.warpAffine(k, rot, (n, n), flags=cv2.INTER_LINEAR)
    k /= max(float(k.sum()), 1e-6)
    return cv2.filter2D(image, -1, k, borderType=cv2.BORDER_REFLECT_101)


def detail_shift(image: np.ndarray, rng: np.random.Generator, soften: bool,
                 factor: tuple[float, float] = (0.3, 0.75), amount: tuple[float, float] = (0.4, 1.5)) -> np.ndarray:
    """Change how much fine detail a crop holds without changing what it shows.

    ``soften``: resample through a lower resolution (side x ``factor``, drawn; area down, linear or cubic up): a
    cheaper or farther camera, a face out of focus. Otherwise an unsharp mask (``amount`` drawn, sigma 0.8-1.5
    px): a camera's own sharpening. Aimed at the sharpness shortcut: in most webcam sets here the attacks are the
    blurrier crops, while in the unseen rooms that fail (issue 11) the live faces are, and the bundled v4 calls a
    live crop attack once it is resampled at half resolution. Measured (``docs/ablation.md``, eighth session):
    a ``TrainAugment`` ``detail_bias`` of 0.75 inverts the cue rather than removing it; 0.5 weakens it.
    """
    h, w = image.shape[:2]
    if soften:
        f = rng.uniform(*factor)
        small = cv2.resize(image, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        up = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
        return cv2.resize(small, (w, h), interpolation=up)
    sd = rng.uniform(0.8, 1.5)
    a = rng.uniform(*amount)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sd, sigmaY=sd, borderType=cv2.BORDER_REFLECT_101)
    return cv2.addWeighted(image, 1 + a, blurred, -a, 0)


def jpeg(image: np.ndarray, rng: np.random.Generator, quality: tuple[int, int] = (35, 95)) -> np.ndarray:
    """JPEG re-encode at a quality drawn from ``quality`` (inclusive): web / messenger recompression."""
    q = int(rng.integers(quality[0], quality[1] + 1))
    bgr = np.ascontiguousarray(image[:, :, ::-1])  # the codec's YCrCb conversion assumes BGR order
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always has a JPEG codec
        raise RuntimeError("OpenCV could not JPEG-encode an image")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


# --- camera and room cues (make the capture device and the background useless as evidence) -------------
def camera_response(image: np.ndarray, rng: np.random.Generator, wb: float = 0.15,
                    gamma: tuple[float, float] = (0.7, 1.4)) -> np.ndarray:
    """Another camera's colour response: per-channel white-balance gains in [1 - wb, 1 + wb] (mean gain kept at
    1) and a tone gamma drawn log-uniformly from ``gamma``; one 256-entry LUT per channel."""
    gains = rng.uniform(1 - wb, 1 + wb, size=3).astype(np.float32)
    gains /= gains.mean()
    g = math.exp(rng.uniform(math.log(gamma[0]), math.log(gamma[1])))
    x = np.linspace(0, 1, 256, dtype=np.float32)
    lut = np.clip(255.0 * (x[:, None] * gains[None]).clip(0, 1) ** g + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut.reshape(256, 1, 3))


def sensor_noise(image: np.ndarray, rng: np.random.Generator, read: tuple[float, float] = (1.0, 6.0),
                 shot: tuple[float, float] = (0.0, 0.08)) -> np.ndarray:
    """Sensor noise of a cheap webcam: Gaussian read noise (sigma in grey levels drawn from ``read``) plus
    signal-dependent shot noise (variance = k x intensity, k drawn from ``shot``), per pixel and channel."""
    x = image.astype(np.float32)
    var = rng.uniform(*read) ** 2 + rng.uniform(*shot) * x
    noisy = x + rng.standard_normal(x.shape, dtype=np.float32) * np.sqrt(var)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def border_mix(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep the face of ``image`` and take the surroundings from ``other`` (same size): a soft face-shaped mask
    (``_face_mask``, a little larger than for self-blending, so the whole face and its edge stay) selects
    ``image``. Used with a partner of the same label from another capture set, so the room, the light on the
    wall and the framing stop identifying the data set while the face (and any spoof medium on it) stays."""
    if other.shape != image.shape:
        other = cv2.resize(other, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    mask = np.clip(_face_mask(h, w, rng) * 1.6, 0, 1)  # grow the blob: the whole face, not just its centre
    return cv2.blendLinear(image, other, mask, 1.0 - mask)


# --- simulated spoof clues --------------------------------------------------------------------------------
def moire(image: np.ndarray, rng: np.random.Generator, strength: tuple[float, float] = (0.08, 0.25),
          frequency: tuple[float, float] = (0.88, 1.12), max_tilt: float = 0.12) -> np.ndarray:
    """Moire of a recaptured screen: a display's sub-pixel grid sampled by the camera's pixel grid.

    The display grid is modelled as a sinusoidal grating of ``frequency`` cycles per image pixel (a screen pixel
    pitch close to one camera pixel, far above Nyquist, 0.5) tilted by up to ``max_tilt`` radians from the
    camera's axes, one grating per axis of the grid; sampling it at integer pixel positions aliases it into the
    low-frequency beat stripes (periods of ~5-50 px) seen on recaptured phones and monitors. The R, G and B
    sub-pixels sit a fraction of a period apart (the camera's Bayer mosaic does not see them as equal), which
    gives the coloured fringes; the black matrix between pixels gives the luminance beat. The image is modulated
    multiplicatively (emitted light x grid transmission) by 1 - a + a * grating, a drawn from ``strength``.
    """
    h, w = image.shape[:2]
    amp = rng.uniform(*strength)
    ys = np.arange(h, dtype=np.float32)[:, None]  # H 1
    xs = np.arange(w, dtype=np.float32)  # W
    chans = np.arange(3, dtype=np.float32)[None]  # 1 3
    theta = rng.uniform(-max_tilt, max_tilt) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
    rows, cols = [], []  # per grid axis: (cos A, -sin A) over (y, channel) and (cos B, sin B) over x
    for axis_angle in (theta, theta + math.pi / 2 + rng.normal(0, 0.03)):  # the grid's two axes
        f = rng.uniform(*frequency)
        u, v = f * math.cos(axis_angle), f * math.sin(axis_angle)
        delta = rng.uniform(0.2, 1.2)  # sub-pixel phase step (2 pi / 3 would cancel the luminance beat)
        a = 2 * math.pi * v * ys + rng.uniform(0, 2 * math.pi) + delta * chans  # H 3
        b = 2 * math.pi * u * xs  # W
        rows += [np.cos(a), -np.sin(a)]
        cols += [np.cos(b), np.sin(b)]
    # separable: sum over axes of cos(A + B) = cos A cos B - sin A sin B, as ONE (H 3) x 4 @ 4 x W product
    left = np.stack(rows, 2).reshape(h * 3, 4)  # (H 3) 4
    pattern = (left @ np.stack(cols, 0)).reshape(h, 3, w).transpose(0, 2, 1)  # H W 3, values in [-2, 2]
    # transmission 1 - a + a (0.5 + pattern / 4): between 1 - a and 1
    gain = pattern * np.float32(0.25 * amp) + np.float32(1.0 - 0.5 * amp)
    return np.clip(image * gain + 0.5, 0, 255).astype(np.uint8)  # float32 math, rounded


def colour_distortion(image: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """Colour reproduction of a recapture medium: gamut / contrast compression and a colour cast.

    ``kind`` "print" (lifted blacks, dimmer whites, desaturated, warm / yellowish paper cast) or "screen"
    (lifted blacks from glare, gamma shift, over-saturated, bluish cast); None picks one at random. A per-channel
    tone curve (one 256-entry LUT each) then a saturation matrix: two cv2 passes.
    """
    kind = kind or ("print" if rng.random() < 0.5 else "screen")
    if kind == "print":
        black, white = rng.uniform(12, 45), rng.uniform(195, 240)
        gamma = rng.uniform(0.85, 1.2)
        sat = rng.uniform(0.5, 0.85)
        cast = np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.80, 0.95)], np.float32)
    elif kind == "screen":
        black, white = rng.uniform(6, 30), rng.uniform(225, 255)
        gamma = rng.uniform(0.75, 1.05)
        sat = rng.uniform(1.1, 1.45)
        cast = np.array([rng.uniform(0.85, 0.97), rng.uniform(0.94, 1.0), 1.0], np.float32)
    else:
        raise ValueError(f"colour_distortion kind must be 'print', 'screen' or None, got {kind!r}")
    cast = cast * rng.uniform(0.97, 1.03, size=3).astype(np.float32)  # per-device variation
    x = np.linspace(0, 1, 256, dtype=np.float32)
    curve = black + (white - black) * x ** gamma  # 256
    lut = np.clip(curve[:, None] * cast[None], 0, 255).astype(np.uint8)  # 256 x 3
    out = cv2.LUT(image, lut.reshape(256, 1, 3))
    return cv2.transform(out, _saturation_matrix(sat))


def _face_mask(side_h: int, side_w: int, rng: np.random.Generator) -> np.ndarray:
    """Soft float32 H x W mask of a face-shaped blob where the crop contract puts the face (centre 2/3 of the
    crop): an ellipse whose radius is perturbed by a few random Fourier terms (a landmark hull stand-in),
    feathered by a Gaussian of random width."""
    h, w = side_h, side_w
    cx = w * (0.5 + rng.normal(0, 0.02))
    cy = h * (0.53 + rng.normal(0, 0.02))
    rx = w * rng.uniform(0.22, 0.32)
    ry = h * rng.uniform(0.28, 0.38)
    t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):  # low-order wobble: jaw / cheek / forehead asymmetry
        r += rng.normal(0, 0.05) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    rot = rng.normal(0, 0.08)
    px = cx + rx * r * np.cos(t) * math.cos(rot) - ry * r * np.sin(t) * math.sin(rot)
    py = cy + rx * r * np.cos(t) * math.sin(rot) + ry * r * np.sin(t) * math.cos(rot)
    # drawn and feathered at quarter resolution, then enlarged: the mask is smooth, so nothing is lost, and a
    # wide Gaussian on the full crop would cost more than the rest of the pipeline
    k = 4
    hs, ws = -(-h // k), -(-w // k)
    small = np.zeros((hs, ws), np.float32)
    pts = np.round(np.stack([px, py], 1) * (16.0 / k)).astype(np.int32)  # 4 fractional bits (shift=4)
    cv2.fillPoly(small, [pts], 1.0, lineType=cv2.LINE_AA, shift=4)
    sd = rng.uniform(0.015, 0.06) * min(h, w) / k
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sd, sigmaY=sd)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def self_blend(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Self-blended image (SBI): a slightly altered copy of the face blended back into the same crop.

    The copy ("source") gets a colour change (per-channel shift, brightness / contrast), a frequency change
    (blur or sharpen) and a small scale / translation; a soft face-shaped mask (``_face_mask``) times a blend
    ratio in [0.5, 1] pastes it over the original ("target"). What remains is what face swaps leave behind:
    a blending boundary, colour mismatch and a resampling seam, with no identity change to learn from.
    """
    h, w = image.shape[:2]
    src = image
    # colour: per-channel offset + brightness / contrast, one affine colour transform
    m = np.zeros((3, 4), np.float32)
    gain = rng.uniform(0.9, 1.1)
    m[:, :3] = np.eye(3, dtype=np.float32) * gain * rng.uniform(0.95, 1.05, size=3)[:, None]
    m[:, 3] = rng.uniform(-18, 18, size=3)
    src = cv2.transform(src, m)
    # frequency: blur or unsharp mask (or neither)
    u = rng.random()
    if u < 0.4:
        sd = rng.uniform(0.5, 1.5)
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=sd, sigmaY=sd)
    elif u < 0.8:
        blurred = cv2.GaussianBlur(src, (0, 0), sigmaX=1.0, sigmaY=1.0)
        amount = rng.uniform(0.3, 1.0)
        src = cv2.addWeighted(src, 1 + amount, blurred, -amount, 0)
    # geometry: scale 0.94..1.06 per axis about the centre, shift up to 3 % of the side
    sx, sy = rng.uniform(0.94, 1.06, size=2)
    tx, ty = rng.uniform(-0.03, 0.03, size=2) * (w, h)
    warp = np.array([[sx, 0, (1 - sx) * w / 2 + tx], [0, sy, (1 - sy) * h / 2 + ty]], np.float32)
    src = cv2.warpAffine(src, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = _face_mask(h, w, rng) * np.float32(rng.uniform(0.5, 1.0))  # H W in [0, 1]
    # mask * src + (1 - mask) * image, rounded, in one OpenCV pass
    return cv2.blendLinear(src, image, mask, 1.0 - mask)


def blend_swap(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blended image of two people (Face X-ray, Li et al., CVPR 2020): the face of ``donor`` (a live crop of
    another person from another capture set) pasted into ``image``.

    Both are contract crops, so the faces sit at the same place and scale; the donor gets a small scale / shift,
    its face region's colour statistics matched to the target's (per LAB channel), sometimes an edge-preserving
    smoothing (what generators leave), and is pasted inside a face-shaped mask either by Poisson blending
    (``cv2.seamlessClone``: no colour seam, only the gradient boundary, as many swap tools do) or by a feathered
    alpha blend. Unlike ``self_blend`` the identity changes inside the mask, as in a real face swap.
    """
    h, w = image.shape[:2]
    if donor.shape != image.shape:
        donor = cv2.resize(donor, (w, h), interpolation=cv2.INTER_AREA)
    sx, sy = rng.uniform(0.92, 1.08, size=2)
    tx, ty = rng.uniform(-0.04, 0.04, size=2) * (w, h)
    warp = np.array([[sx, 0, (1 - sx) * w / 2 + tx], [0, sy, (1 - sy) * h / 2 + ty]], np.float32)
    src = cv2.warpAffine(donor, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    soft = _face_mask(h, w, rng)
    inside = soft > 0.5
    if inside.sum() < 16:  # a degenerate mask: nothing to paste
        return image.copy()
    lab_s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_t = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    ms, ss = lab_s[inside].mean(0), lab_s[inside].std(0) + 1.0
    mt, st = lab_t[inside].mean(0), lab_t[inside].std(0) + 1.0
    lab_s = (lab_s - ms) * (st / ss) + mt
    src = cv2.cvtColor(np.clip(lab_s, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    if rng.random() < 0.5:
        src = cv2.bilateralFilter(src, 5, rng.uniform(20, 50), 5)
    if rng.random() < 0.6:
        mask8 = inside.astype(np.uint8) * 255
        ys, xs = np.nonzero(mask8)
        centre = (int(xs.min() + xs.max() + 1) // 2, int(ys.min() + ys.max() + 1) // 2)
        return cv2.seamlessClone(src, image, mask8, centre, cv2.NORMAL_CLONE)
    return cv2.blendLinear(src, image, soft, 1.0 - soft)


# --- pipelines --------------------------------------------------------------------------------------------
class EvalTransform:
    """Evaluation / inference transform: resize the contract crop to ``size`` (nothing else), uint8 RGB, with
    ``models.preprocess.resize_crop`` (the app's and the model's one rule). A crop at ``size`` is not copied.
    """

    def __init__(self, size: int):
        if int(size) < 8:
            raise ValueError(f"size must be a model input size in pixels (>= 8), got {size!r}")
        self.size = int(size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(resize_crop(check_crop(image), self.size))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


class TrainAugment:
    """Training augmentation: ``aug(image, label) -> (image, label)`` for a uint8 RGB contract crop.

    Order: (1) at most one simulated spoof clue, applied to live crops only, which then become attacks
    (label 1): self-blend (p_self_blend, on the input crop, before resampling, as a swap is), moire
    (p_moire), colour distortion (p_colour_distortion), as in the challenge winner's simulated physical /
    digital spoof clues, or a blended swap with another person's face (p_swap_blend, ``blend_swap``; needs a
    ``partner``, else it falls back to self-blend); (2) a square window of ``scale`` x the crop side, its centre shifted by up to ``shift``
    x the side but kept inside the crop (the context the crop contract gives; no invented border), optionally
    rotated by up to ``rotate`` degrees, resized to ``size``; (3) horizontal flip; (4) colour jitter; (5) camera
    response (white balance, gamma; p_camera); (6) blur (Gaussian, or linear motion blur with p_motion_blur;
    both classes alike); (6b) with p_detail, a detail shift (``detail_shift``) that softens a live crop with
    probability ``detail_bias`` and sharpens an attack with the same probability (the other way round
    otherwise; 0.5, the default, treats both classes alike); (7) sensor noise (p_noise); (8) JPEG recompression.
    Before all of it (unless the partner's face is being swapped in), with probability p_border_mix and a ``partner`` crop, the surroundings of the face are
    replaced by the partner's (``border_mix``). Moire is drawn on the output grid (it is a property of the capturing camera's
    pixels). Deterministic for a ``seed``; inside a torch DataLoader worker the stream is re-seeded from
    (seed, worker id) so workers do not repeat each other, and OpenCV is set to one thread in that worker.
    """

    def __init__(self, size: int, *, p_flip: float = 0.5, scale: tuple[float, float] = (0.85, 1.0),
                 shift: float = 0.06, rotate: float = 0.0, p_colour_jitter: float = 0.8,
                 brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue_deg: float = 8.0,
                 p_blur: float = 0.15, blur_sigma: tuple[float, float] = (0.4, 1.4), p_jpeg: float = 0.3,
                 jpeg_quality: tuple[int, int] = (35, 95), p_moire: float = 0.1, p_colour_distortion: float = 0.1,
                 p_self_blend: float = 0.1, p_camera: float = 0.0, p_noise: float = 0.0, p_border_mix: float = 0.0,
                 p_swap_blend: float = 0.0, p_motion_blur: float = 0.0, p_detail: float = 0.0, detail_bias: float = 0.5,
                 seed: int | None = None, rng: np.random.Generator | None = None):
        if int(size) < 8:
            raise ValueError(f"size must be a model input size in pixels (>= 8), got {size!r}")
        probs = dict(p_flip=p_flip, p_colour_jitter=p_colour_jitter, p_blur=p_blur, p_jpeg=p_jpeg, p_moire=p_moire,
                     p_colour_distortion=p_colour_distortion, p_self_blend=p_self_blend, p_camera=p_camera,
                     p_noise=p_noise, p_border_mix=p_border_mix, p_swap_blend=p_swap_blend,
                     p_motion_blur=p_motion_blur, p_detail=p_detail, detail_bias=detail_bias)
        for k, v in probs.items():
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{k} must be a probability in [0, 1], got {v!r}")
        if p_moire + p_colour_distortion + p_self_blend + p_swap_blend > 1.0 + 1e-9:
            raise ValueError("p_moire + p_colour_distortion + p_self_blend + p_swap_blend must be <= 1 (at most "
                             f"one spoof clue per crop), got {p_moire} + {p_colour_distortion} + {p_self_blend} + "
                             f"{p_swap_blend}")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1 (a window inside the crop), got {scale}")
        if not 0.0 <= shift < 0.5:
            raise ValueError(f"shift must be a fraction of the crop side in [0, 0.5), got {shift}")
        if not 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must be (lo, hi) within 1..100, got {jpeg_quality}")
        self.size = int(size)
        self.p_flip, self.scale, self.shift, self.rotate = float(p_flip), tuple(scale), float(shift), float(rotate)
        self.p_colour_jitter = float(p_colour_jitter)
        self.jitter = dict(brightness=brightness, contrast=contrast, saturation=saturation, hue_deg=hue_deg)
        self.p_blur, self.blur_sigma = float(p_blur), tuple(blur_sigma)
        self.p_jpeg, self.jpeg_quality = float(p_jpeg), tuple(jpeg_quality)
        self.p_moire, self.p_colour_distortion = float(p_moire), float(p_colour_distortion)
        self.p_self_blend, self.p_swap_blend = float(p_self_blend), float(p_swap_blend)
        self.p_motion_blur = float(p_motion_blur)
        self.p_detail, self.detail_bias = float(p_detail), float(detail_bias)
        self.p_camera, self.p_noise, self.p_border_mix = float(p_camera), float(p_noise), float(p_border_mix)
        self.seed = seed
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        self._worker: int | None = None

    def _generator(self) -> np.random.Generator:
        torch = sys.modules.get("torch")  # never import torch just to ask; the DataLoader has already imported it
        if torch is not None:
            info = torch.utils.data.get_worker_info()
            if info is not None and info.id != self._worker:
                # each worker process holds a pickled copy of the same stream: re-seed it per worker
                self._worker = info.id
                # no cv2.setNumThreads here: in a forked worker it waits for the parent's pool threads, which do
                # not exist in the child, and hangs forever. Callers limit OpenCV threads before forking.
                base = self.seed if self.seed is not None else int(info.seed % 2 ** 32)
                self._rng = np.random.default_rng([base, info.id])
        return self._rng

    def _geometry(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        side = min(h, w)
        win = side * rng.uniform(*self.scale)
        room = (side - win) / 2  # how far the window centre may move and stay inside
        cx = w / 2 + float(np.clip(rng.uniform(-self.shift, self.shift) * side, -room, room))
        cy = h / 2 + float(np.clip(rng.uniform(-self.shift, self.shift) * side, -room, room))
        angle = rng.uniform(-self.rotate, self.rotate) if self.rotate > 0 else 0.0
        if angle == 0.0:
            x0, y0 = int(round(cx - win / 2)), int(round(cy - win / 2))
            n = max(1, int(round(win)))
            x0, y0 = min(max(x0, 0), w - n), min(max(y0, 0), h - n)
            return resize_crop(image[y0:y0 + n, x0:x0 + n], self.size)
        # rotated window: one affine warp (corners outside the crop are reflected)
        s = self.size / win
        m = cv2.getRotationMatrix2D((cx, cy), angle, s)
        m[:, 2] += (self.size / 2 - cx, self.size / 2 - cy)
        return cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)

    def __call__(self, image: np.ndarray, label: int, rng: np.random.Generator | None = None,
                 partner: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """``partner``: a crop of the same label from another capture set, for border mixing (optional)."""
        image = check_crop(image)
        if label not in (0, 1):
            raise ValueError(f"label must be 0 (live) or 1 (attack), got {label!r}")
        rng = rng if rng is not None else self._generator()
        label = int(label)
        clue = None
        u = rng.random()  # drawn for every crop, so the stream does not depend on the label
        if label == 0:
            if u < self.p_self_blend:
                clue = "self_blend"
            elif u < self.p_self_blend + self.p_moire:
                clue = "moire"
            elif u < self.p_self_blend + self.p_moire + self.p_colour_distortion:
                clue = "colour"
            elif u < self.p_self_blend + self.p_moire + self.p_colour_distortion + self.p_swap_blend:
                clue = "swap_blend" if partner is not None else "self_blend"
        if clue == "swap_blend":
            image, label = blend_swap(image, check_crop(partner), rng), 1
        elif self.p_border_mix > 0 and partner is not None and rng.random() < self.p_border_mix:
            image = border_mix(image, check_crop(partner), rng)
        if clue == "self_blend":
            image, label = self_blend(image, rng), 1
        out = self._geometry(image, rng)  # size x size x 3, a view or a new array
        if clue == "moire":
            out, label = moire(out, rng), 1
        elif clue == "colour":
            out, label = colour_distortion(out, rng), 1
        if rng.random() < self.p_flip:
            out = out[:, ::-1]
        if rng.random() < self.p_colour_jitter:
            out = colour_jitter(np.ascontiguousarray(out), rng, **self.jitter)
        if self.p_camera > 0 and rng.random() < self.p_camera:
            out = camera_response(np.ascontiguousarray(out), rng)
        if rng.random() < self.p_blur:
            out = gaussian_blur(np.ascontiguousarray(out), rng, self.blur_sigma)
        if self.p_motion_blur > 0 and rng.random() < self.p_motion_blur:
            out = motion_blur(np.ascontiguousarray(out), rng)
        if self.p_detail > 0 and rng.random() < self.p_detail:
            soften = (rng.random() < self.detail_bias) == (label == 0)
            out = detail_shift(np.ascontiguousarray(out), rng, soften)
        if self.p_noise > 0 and rng.random() < self.p_noise:
            out = sensor_noise(np.ascontiguousarray(out), rng)
        if rng.random() < self.p_jpeg:
            out = jpeg(np.ascontiguousarray(out), rng, self.jpeg_quality)
        out = np.ascontiguousarray(out)
        if np.may_share_memory(out, image):  # never hand back a view of the caller's (maybe read-only) array
            out = out.copy()
        return out, label

    def __repr__(self) -> str:
        return (f"TrainAugment(size={self.size}, p_flip={self.p_flip}, scale={self.scale}, shift={self.shift}, "
                f"p_moire={self.p_moire}, p_colour_distortion={self.p_colour_distortion}, "
                f"p_self_blend={self.p_self_blend}, p_camera={self.p_camera}, p_noise={self.p_noise}, "
                f"p_border_mix={self.p_border_mix}, p_swap_blend={self.p_swap_blend}, p_motion_blur={self.p_motion_blur}, "
                f"p_detail={self.p_detail}, detail_bias={self.detail_bias}, seed={self.seed})")


def augment_batch(images: Sequence[np.ndarray], labels: Sequence[int], aug: TrainAugment) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``aug`` to each crop: N x size x size x 3 uint8 and the (possibly changed) int64 labels."""
    outs = [aug(im, int(lb)) for im, lb in zip(images, labels)]
    return np.stack([o[0] for o in outs]), np.array([o[1] for o in outs], np.int64)


# --- benchmark / preview (python -m models.training.augment --help) -------------------------------------------------
def _bench(image: np.ndarray, size: int, repeats: int, seed: int) -> list[tuple[str, float, float]]:
    """(name, median ms, p90 ms) per op and for the default pipeline, after a warm-up, on one crop."""
    import time

    rng = np.random.default_rng(seed)
    small = resize_crop(image, size)
    aug = TrainAugment(size, seed=seed)
    cases = [
        ("EvalTransform", lambda: EvalTransform(size)(image)),
        ("colour_jitter", lambda: colour_jitter(small, rng)),
        ("gaussian_blur", lambda: gaussian_blur(small, rng)),
        ("jpeg", lambda: jpeg(small, rng)),
        ("moire", lambda: moire(small, rng)),
        ("colour_distortion", lambda: colour_distortion(small, rng)),
        ("self_blend (input size)", lambda: self_blend(image, rng)),
        ("TrainAugment default, live", lambda: aug(image, 0)),
        ("TrainAugment default, attack", lambda: aug(image, 1)),
    ]
    out = []
    for name, fn in cases:
        for _ in range(max(5, repeats // 10)):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        out.append((name, float(np.median(times)), float(np.percentile(times, 90))))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Benchmark the ops on one crop (``--bench``) and / or write a preview grid PNG (``--grid``)."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m models.training.augment", description=main.__doc__)
    p.add_argument("--image", help="an RGB face crop (any size; default: matplotlib's grace_hopper sample, 160 px)")
    p.add_argument("--size", type=int, default=128, help="model input size")
    p.add_argument("--bench", action="store_true", help="time each op and the default pipeline")
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads for the run (the trainer's workers "
                   "see one core each)")
    p.add_argument("--json", help="also write the benchmark table as JSON here")
    p.add_argument("--grid", help="write a PNG: rows of examples per op and of the full pipeline")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.image:
        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            p.error(f"cannot read --image {args.image}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        import matplotlib.cbook as cbook

        bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
        image = cv2.resize(cv2.cvtColor(bgr[:512, :512], cv2.COLOR_BGR2RGB), (160, 160), interpolation=cv2.INTER_AREA)
    cv2.setNumThreads(args.threads)
    if args.bench:
        rows = _bench(image, args.size, args.repeats, args.seed)
        print(f"crop {image.shape[1]}x{image.shape[0]} -> {args.size}, cv2 threads {args.threads}, "
              f"{args.repeats} repeats")
        print(f"{'op':<30} {'median ms':>10} {'p90 ms':>8}")
        for name, med, p90 in rows:
            print(f"{name:<30} {med:>10.3f} {p90:>8.3f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"op": n, "median_ms": m, "p90_ms": q} for n, m, q in rows], f, indent=2)
    if args.grid:
        rng = np.random.default_rng(args.seed)
        small = resize_crop(image, args.size)
        aug = TrainAugment(args.size, seed=args.seed)
        n = 6
        grid_rows = [[small] + [op(small, rng) for _ in range(n - 1)] for op in (moire, colour_distortion)]
        grid_rows.append([small] + [resize_crop(self_blend(image, rng), args.size) for _ in range(n - 1)])
        grid_rows.append([small] + [aug(image, i % 2)[0] for i in range(n - 1)])
        grid = np.concatenate([np.concatenate(r, 1) for r in grid_rows], 0)
        cv2.imwrite(args.grid, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(f"grid: {args.grid} (rows: moire, colour distortion, self-blend, TrainAugment)")
    if not (args.bench or args.grid):
        p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
