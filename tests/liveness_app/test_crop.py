"""The face crop contract of docs/architecture.md and the quality-gate measurements."""
import cv2
import numpy as np
import pytest

from liveness_app.crop import (assess_quality, crop_face, crop_square, cutoff_fraction, sharpness)
from liveness_app.types import FaceBox
from media import face_image


def test_square_is_centred_and_one_and_a_half_times_the_larger_side():
    x0, y0, side = crop_square(FaceBox(200, 150, 80, 100), 640, 480)
    assert side == 150
    assert (x0 + side / 2, y0 + side / 2) == (240, 200)  # the box centre


def test_side_is_clipped_to_the_smaller_frame_dimension_and_shifted_inside():
    x0, y0, side = crop_square(FaceBox(500, 300, 400, 360), 640, 480)
    assert side == 480 and y0 == 0 and x0 == 640 - 480
    x0, y0, side = crop_square(FaceBox(-20, -30, 100, 100), 640, 480)  # box partly outside, top-left
    assert (x0, y0, side) == (0, 0, 150)


@pytest.mark.parametrize("seed", range(5))
def test_random_boxes_satisfy_the_contract(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        fw, fh = int(rng.integers(50, 900)), int(rng.integers(50, 900))
        w, h = rng.uniform(5, 600, 2)
        box = FaceBox(rng.uniform(-w, fw), rng.uniform(-h, fh), w, h)
        x0, y0, side = crop_square(box, fw, fh)
        assert side == max(1, round(min(1.5 * max(w, h), fw, fh)))
        assert 0 <= x0 and x0 + side <= fw and 0 <= y0 and y0 + side <= fh
        cx, cy = box.x + w / 2, box.y + h / 2
        if side / 2 + 1 < cx < fw - side / 2 - 1 and side / 2 + 1 < cy < fh - side / 2 - 1:
            assert abs(x0 + side / 2 - cx) <= 0.5 and abs(y0 + side / 2 - cy) <= 0.5  # not shifted


def test_crop_face_cuts_that_square_and_resizes_to_the_requested_size():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    box = FaceBox(100, 80, 90, 70)
    for size in (32, 160, 224):
        crop = crop_face(frame, box, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        x0, y0, side = crop_square(box, 480, 360)
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        np.testing.assert_array_equal(crop, cv2.resize(frame[y0:y0 + side, x0:x0 + side], (size, size),
                                                       interpolation=interp))
    with pytest.raises(ValueError, match="crop size"):
        crop_face(frame, box, 0)


def test_cutoff_fraction_of_the_crop_square():
    assert cutoff_fraction(FaceBox(30, 30, 40, 40), 100, 100) == 0.0  # square 60 on (50, 50) fits
    assert cutoff_fraction(FaceBox(-20, 30, 40, 40), 100, 100) == pytest.approx(0.5)  # centre on the edge
    assert cutoff_fraction(FaceBox(80, 80, 40, 40), 100, 100) == pytest.approx(0.75)  # centre in the corner
    assert cutoff_fraction(FaceBox(0, 0, 40, 40), 100, 100) == pytest.approx(1 - 50 * 50 / 60 ** 2)
    assert cutoff_fraction(FaceBox(30, 30, 40, 40), 100, 100, scale=1.0) == 0.0


def test_quality_gate_rejects_small_blurred_and_cut_off_faces():
    face = cv2.cvtColor(cv2.resize(face_image(), (160, 160), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    blurred = cv2.GaussianBlur(face, (0, 0), 4)
    assert sharpness(face) > 4 * sharpness(blurred)
    kw = dict(min_face_px=40, min_sharpness=15.0, max_cutoff=0.2)
    good = assess_quality(FaceBox(100, 100, 120, 120), face, 640, 480, **kw)
    assert good.ok, good
    assert assess_quality(FaceBox(100, 100, 120, 120), blurred, 640, 480, **kw).reasons == ("blurred",)
    assert assess_quality(FaceBox(100, 100, 30, 30), face, 640, 480, **kw).reasons == ("small",)
    assert assess_quality(FaceBox(-60, 100, 120, 120), face, 640, 480, **kw).reasons == ("cut off",)
    assert assess_quality(FaceBox(20, 100, 120, 120), face, 640, 480, **kw).reasons == ()  # 1/9 of the square
