"""models.training.augment: shapes / dtypes, determinism under a seed, every op changes the image, label handling."""
from __future__ import annotations

import cv2
import matplotlib.cbook as cbook
import numpy as np
import pytest

from models.training.augment import (EvalTransform, TrainAugment, augment_batch, border_mix, camera_response,
                                    colour_distortion, colour_jitter, detail_shift, gaussian_blur, jpeg, moire,
                                    self_blend, sensor_noise)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real 160 x 160 RGB portrait crop (matplotlib's Grace Hopper sample), as the crop contract makes them."""
    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert bgr is not None
    rgb = cv2.cvtColor(bgr[:512, :512], cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (160, 160), interpolation=cv2.INTER_AREA)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_eval_transform_is_a_plain_resize(face):
    out = EvalTransform(128)(face)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert np.array_equal(out, cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA))
    assert np.array_equal(EvalTransform(160)(face), face)
    with pytest.raises(ValueError, match="uint8 RGB"):
        EvalTransform(128)(face.astype(np.float32))


@pytest.mark.parametrize("size", [128, 160, 32])
def test_train_augment_shapes_and_dtypes(face, size):
    aug = TrainAugment(size, seed=0, rotate=5.0)
    for label in (0, 1) * 20:
        out, lab = aug(face, label)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        assert lab in (0, 1)
        assert not np.may_share_memory(out, face)


def test_output_never_aliases_a_read_only_input(face):
    ro = face.copy()
    ro.setflags(write=False)
    aug = TrainAugment(160, p_flip=0, scale=(1, 1), shift=0, p_colour_jitter=0, p_blur=0, p_jpeg=0, p_moire=0,
                       p_colour_distortion=0, p_self_blend=0, seed=0)
    out, lab = aug(ro, 0)
    assert np.array_equal(out, face) and lab == 0 and out.flags.writeable


def test_deterministic_under_seed(face):
    a, b, c = (TrainAugment(128, seed=s, p_moire=0.3, p_colour_distortion=0.3, p_self_blend=0.3) for s in (7, 7, 8))
    outs_a = [a(face, i % 2) for i in range(30)]
    outs_b = [b(face, i % 2) for i in range(30)]
    outs_c = [c(face, i % 2) for i in range(30)]
    for (x, lx), (y, ly) in zip(outs_a, outs_b):
        assert lx == ly and np.array_equal(x, y)
    assert any(not np.array_equal(x, z) for (x, _), (z, _) in zip(outs_a, outs_c))
    # an explicit generator overrides the stored stream, reproducibly
    aug = TrainAugment(128, seed=0)
    x1, _ = aug(face, 0, rng=np.random.default_rng(3))
    x2, _ = aug(face, 0, rng=np.random.default_rng(3))
    assert np.array_equal(x1, x2)


@pytest.mark.parametrize("op", [colour_jitter, gaussian_blur, jpeg, moire, colour_distortion, self_blend])
def test_each_op_changes_the_image(face, op):
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = op(face, rng)
        assert out.shape == face.shape and out.dtype == np.uint8
        assert _diff(out, face) > 0.5, op.__name__


def test_colour_distortion_kinds_compress_the_range(face):
    rng = np.random.default_rng(1)
    for kind in ("print", "screen"):
        out = colour_distortion(face, rng, kind=kind)
        # lifted blacks (print: paper, screen: glare); the saturation matrix keeps luminance, so test that
        assert (out.astype(np.float32) @ [0.299, 0.587, 0.114]).min() > (face.astype(np.float32) @ [0.299, 0.587, 0.114]).min() + 3
    with pytest.raises(ValueError, match="print"):
        colour_distortion(face, rng, kind="tv")
    # print desaturates: mean chroma (max - min over channels) goes down
    p = colour_distortion(face, np.random.default_rng(2), kind="print").astype(int)
    f = face.astype(int)
    assert (p.max(2) - p.min(2)).mean() < (f.max(2) - f.min(2)).mean()


def test_moire_is_a_low_frequency_beat(face):
    """The aliased grid must show up as stripes far coarser than the 1 px display pitch: most of the change's
    energy lies below 0.25 cycles / pixel."""
    grey = np.full((128, 128, 3), 128, np.uint8)
    out = moire(grey, np.random.default_rng(4), strength=(0.3, 0.3)).astype(np.float32).mean(2)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(out - out.mean()))) ** 2
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(128)), np.fft.fftshift(np.fft.fftfreq(128)), indexing="ij")
    low = spec[np.hypot(fy, fx) < 0.25].sum() / spec.sum()
    assert out.std() > 3 and low > 0.9


def test_self_blend_changes_the_face_more_than_the_border(face):
    out = self_blend(face, np.random.default_rng(0))
    d = np.abs(out.astype(np.int16) - face.astype(np.int16)).mean(2)
    assert d[50:110, 50:110].mean() > 4 * d[:10].mean() + 0.5  # the mask sits where the contract puts the face


def test_spoof_clues_turn_live_into_attack(face):
    for kw in (dict(p_self_blend=1.0, p_moire=0.0, p_colour_distortion=0.0),
               dict(p_self_blend=0.0, p_moire=1.0, p_colour_distortion=0.0),
               dict(p_self_blend=0.0, p_moire=0.0, p_colour_distortion=1.0)):
        plain = TrainAugment(128, seed=5, p_moire=0, p_colour_distortion=0, p_self_blend=0)
        clue = TrainAugment(128, seed=5, **kw)
        for _ in range(5):
            out, lab = clue(face, 0)
            ref, ref_lab = plain(face, 0)
            assert lab == 1 and ref_lab == 0
            assert out.shape == (128, 128, 3) and _diff(out, ref) > 0.5, kw
        # attacks stay attacks; clues are drawn only for live crops
        assert all(clue(face, 1)[1] == 1 for _ in range(5))
    # default probabilities: some live crops become attacks, never an attack becomes live
    aug = TrainAugment(128, seed=0)
    live = [aug(face, 0)[1] for _ in range(300)]
    assert 0.15 < np.mean(live) < 0.45  # 0.1 + 0.1 + 0.1 expected
    assert all(aug(face, 1)[1] == 1 for _ in range(50))


def test_geometry_stays_inside_the_crop(face):
    """Scale / shift jitter crops a window of the contract crop; with scale 1 there is no room, so no shift."""
    aug = TrainAugment(160, p_flip=0, scale=(1, 1), shift=0.2, p_colour_jitter=0, p_blur=0, p_jpeg=0, p_moire=0,
                       p_colour_distortion=0, p_self_blend=0, seed=0)
    assert all(np.array_equal(aug(face, 0)[0], face) for _ in range(5))
    flip = TrainAugment(160, p_flip=1, scale=(1, 1), shift=0, p_colour_jitter=0, p_blur=0, p_jpeg=0, p_moire=0,
                        p_colour_distortion=0, p_self_blend=0, seed=0)
    assert np.array_equal(flip(face, 0)[0], face[:, ::-1])
    zoom = TrainAugment(128, p_flip=0, scale=(0.8, 0.8), shift=0.0, p_colour_jitter=0, p_blur=0, p_jpeg=0, p_moire=0,
                        p_colour_distortion=0, p_self_blend=0, seed=0)
    want = cv2.resize(face[16:144, 16:144], (128, 128), interpolation=cv2.INTER_LINEAR)  # centre 128 px window
    assert np.array_equal(zoom(face, 0)[0], want)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="p_moire"):
        TrainAugment(128, p_moire=1.5)
    with pytest.raises(ValueError, match="at most one spoof clue"):
        TrainAugment(128, p_moire=0.5, p_colour_distortion=0.4, p_self_blend=0.2)
    with pytest.raises(ValueError, match="scale"):
        TrainAugment(128, scale=(0.8, 1.2))
    with pytest.raises(ValueError, match="label"):
        TrainAugment(128, seed=0)(np.zeros((160, 160, 3), np.uint8), 2)


def test_augment_batch(face):
    imgs, labels = augment_batch([face] * 4, [0, 1, 0, 1], TrainAugment(64, seed=0, p_self_blend=1.0, p_moire=0,
                                                                        p_colour_distortion=0))
    assert imgs.shape == (4, 64, 64, 3) and imgs.dtype == np.uint8
    assert labels.tolist() == [1, 1, 1, 1]


def test_dataloader_workers_get_distinct_streams(face):
    torch = pytest.importorskip("torch")

    class DS(torch.utils.data.Dataset):
        def __init__(self):
            self.aug = TrainAugment(32, seed=0)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.from_numpy(self.aug(face, 0)[0])

    import cv2

    big = np.zeros((2000, 2000, 3), np.uint8)
    for _ in range(3):  # start OpenCV's thread pool in the parent first, as earlier code in a process does:
        cv2.GaussianBlur(big, (5, 5), 1)  # a forked worker touching the pool's size then hangs (found in CI)
    dl = torch.utils.data.DataLoader(DS(), batch_size=1, num_workers=2, shuffle=False, timeout=60)
    items = [b[0].numpy() for b in dl]  # worker 0 gets items 0, 2; worker 1 gets 1, 3
    assert not np.array_equal(items[0], items[1])


# --- camera and room cues -----------------------------------------------------------------------------------
def test_camera_response_changes_white_balance_and_tone(face):
    rng = np.random.default_rng(3)
    outs = [camera_response(face, rng) for _ in range(8)]
    ratios = [o.reshape(-1, 3).mean(0) / (face.reshape(-1, 3).mean(0) + 1e-6) for o in outs]
    assert np.std([r[0] / r[2] for r in ratios]) > 0.02  # the R / B balance moves from sample to sample
    assert all(o.shape == face.shape and o.dtype == np.uint8 for o in outs)


def test_sensor_noise_is_zero_mean_and_brighter_pixels_get_more(face):
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 40, np.uint8)
    bright = np.full((64, 64, 3), 200, np.uint8)
    dn = sensor_noise(flat, rng, read=(2, 2), shot=(0.05, 0.05)).astype(np.float32) - 40
    db = sensor_noise(bright, rng, read=(2, 2), shot=(0.05, 0.05)).astype(np.float32) - 200
    assert abs(dn.mean()) < 0.3 and abs(db.mean()) < 0.3
    assert db.std() > 1.5 * dn.std()


def test_border_mix_keeps_the_face_and_replaces_the_surroundings(face):
    other = np.zeros_like(face)
    out = border_mix(face, other, np.random.default_rng(1))
    centre = np.abs(out[60:100, 60:100].astype(np.int16) - face[60:100, 60:100]).mean()
    corner = np.abs(out[:12, :12].astype(np.int16) - face[:12, :12]).mean()
    assert centre < 2 and corner > 0.8 * face[:12, :12].mean()
    small = border_mix(face, np.zeros((50, 50, 3), np.uint8), np.random.default_rng(1))  # resized partner
    assert small.shape == face.shape


def test_train_augment_room_ops_are_off_by_default_and_use_the_partner(face):
    base = TrainAugment(128, seed=2)
    again = TrainAugment(128, seed=2)
    black = np.zeros_like(face)
    # default: p_border_mix 0, so a partner changes nothing and draws nothing
    assert np.array_equal(base(face, 0, partner=black)[0], again(face, 0)[0])
    mixer = TrainAugment(128, seed=2, p_border_mix=1.0, p_flip=0, p_colour_jitter=0, p_blur=0, p_jpeg=0,
                         p_moire=0, p_colour_distortion=0, p_self_blend=0, scale=(1, 1))
    out, label = mixer(face, 0, partner=black)
    assert label == 0 and out[:8, :8].mean() < 0.5 * EvalTransform(128)(face)[:8, :8].mean()
    with pytest.raises(ValueError, match="p_noise"):
        TrainAugment(128, p_noise=1.5)


def test_blend_swap_pastes_the_donor_face_inside_and_keeps_the_surroundings():
    from models.training.augment import blend_swap

    yy, xx = np.mgrid[0:160, 0:160]
    target = np.dstack([xx, yy, np.full_like(xx, 90)]).astype(np.uint8)  # smooth ramps
    donor = np.zeros((160, 160, 3), np.uint8)
    donor[::8] = 255  # stripes the target has none of
    for seed in range(6):  # both the Poisson and the alpha path are drawn
        out = blend_swap(target, donor, np.random.default_rng(seed))
        assert out.shape == target.shape and out.dtype == np.uint8
        assert np.array_equal(out[:8, :8], target[:8, :8]) and np.array_equal(out[-8:, -8:], target[-8:, -8:])
        centre = out[60:100, 60:100].astype(int)
        # the donor's stripes show through inside the face mask (rows differ from one another much more)
        assert np.abs(np.diff(centre[..., 1], axis=0)).mean() > 5 * np.abs(np.diff(target[60:100, 60:100, 1]
                                                                                    .astype(int), axis=0)).mean()


def test_train_augment_swap_blend_makes_attacks_and_needs_a_partner():
    from models.training.augment import TrainAugment

    img = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    aug = TrainAugment(128, p_swap_blend=1.0, p_self_blend=0.0, p_moire=0.0, p_colour_distortion=0.0, seed=0)
    out, label = aug(img, 0, partner=img[::-1].copy())
    assert label == 1 and out.shape == (128, 128, 3)
    out, label = aug(img, 0)  # no partner: falls back to self-blending, still an attack
    assert label == 1
    _, label = aug(img, 1, partner=img)
    assert label == 1
    with pytest.raises(ValueError, match="p_swap_blend"):
        TrainAugment(128, p_swap_blend=0.6, p_self_blend=0.5)


def test_motion_blur_smears_along_one_direction_and_keeps_the_mean():
    from models.training.augment import motion_blur

    img = np.zeros((96, 96, 3), np.uint8)
    img[48, 48] = 255  # a point: its smear is the kernel
    out = motion_blur(img, np.random.default_rng(3), length=(0.2, 0.2))
    lit = np.argwhere(out[..., 0] > 0)
    assert len(lit) >= 10  # spread over a line of ~19 px
    spread = np.linalg.svd(lit - lit.mean(0), compute_uv=False)
    assert spread[0] > 4 * spread[1]  # along one direction, not a disc
    flat = np.full((64, 64, 3), 120, np.uint8)
    assert np.array_equal(motion_blur(flat, np.random.default_rng(0)), flat)
    aug = TrainAugment(64, p_motion_blur=1.0, p_self_blend=0.0, p_moire=0.0, p_colour_distortion=0.0, seed=0)
    assert aug(flat, 0)[1] == 0  # a nuisance, not a spoof clue: the label stays


def _sharpness(image: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def test_detail_shift_softens_or_sharpens_without_moving_the_picture():
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), (0, 0), 1.2)
    soft = detail_shift(image, np.random.default_rng(0), soften=True)
    sharp = detail_shift(image, np.random.default_rng(0), soften=False)
    assert soft.shape == sharp.shape == image.shape and soft.dtype == sharp.dtype == np.uint8
    assert _sharpness(soft) < 0.7 * _sharpness(image) < 0.7 * _sharpness(sharp)
    # the content stays where it was: the low frequencies agree with the input
    low = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), 4.0)
    assert np.abs(low(soft) - low(image)).mean() < 3.0
    assert np.abs(low(sharp) - low(image)).mean() < 3.0


def test_detail_bias_softens_live_and_sharpens_attacks():
    """With bias 1 every live crop is softened and every attack sharpened; with p_detail 0 the stream of an
    existing recipe is unchanged (old runs stay reproducible)."""
    rng = np.random.default_rng(4)
    image = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (0, 0), 1.0)
    quiet = dict(p_flip=0.0, p_colour_jitter=0.0, p_blur=0.0, p_jpeg=0.0, p_moire=0.0, p_colour_distortion=0.0,
                 p_self_blend=0.0, scale=(1.0, 1.0), shift=0.0)
    base = TrainAugment(64, **quiet, seed=0)(image, 0)[0]
    live = TrainAugment(64, **quiet, p_detail=1.0, detail_bias=1.0, seed=0)(image, 0)
    attack = TrainAugment(64, **quiet, p_detail=1.0, detail_bias=1.0, seed=0)(image, 1)
    assert live[1] == 0 and attack[1] == 1  # a nuisance: labels stay
    assert _sharpness(live[0]) < 0.7 * _sharpness(base) < 0.7 * _sharpness(attack[0])
    flipped = TrainAugment(64, **quiet, p_detail=1.0, detail_bias=0.0, seed=0)(image, 0)[0]
    assert _sharpness(flipped) > _sharpness(base) / 0.7
    off = [TrainAugment(64, seed=5)(image, k % 2)[0] for k in range(6)]
    off0 = [TrainAugment(64, p_detail=0.0, detail_bias=0.2, seed=5)(image, k % 2)[0] for k in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(off, off0))
    with pytest.raises(ValueError, match="detail_bias"):
        TrainAugment(64, detail_bias=1.5)
