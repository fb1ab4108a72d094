"""The Python API: LivenessDetector on real portraits with the bundled model, real mediapipe and real OpenCV."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from media import background, face_image, make_face_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def det():
    from liveness_app import LivenessDetector

    with LivenessDetector(backend="torch") as d:  # the bundled model; torch: no export step in tests
        yield d


@pytest.fixture(scope="module")
def portrait_bgr():
    img = background(480, 440, seed=2).copy()
    img[20:420, 40:440] = face_image("grace_hopper")
    return img


def test_import_is_light_and_never_imports_qt():
    code = ("import sys, liveness_app\n"
            "heavy = [m for m in ('torch', 'mediapipe', 'cv2', 'PySide6') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from liveness_app import LivenessDetector\n"
            "assert 'PySide6' not in sys.modules\n"
            "print(liveness_app.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().count(".") == 2


def test_score_image_path_array_and_pil_agree(det, portrait_bgr, tmp_path):
    from PIL import Image

    path = tmp_path / "face.png"
    cv2.imwrite(str(path), portrait_bgr)
    rgb = cv2.cvtColor(portrait_bgr, cv2.COLOR_BGR2RGB)
    results = {
        "path": det.score_image(path),
        "str": det.score_image(str(path)),
        "bgr": det.score_image(portrait_bgr),
        "bgr explicit": det.score_image(portrait_bgr, color="bgr"),
        "rgb": det.score_image(rgb, color="rgb"),
        "pil": det.score_image(Image.fromarray(rgb)),
        "rgba": det.score_image(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), color="rgb"),
    }
    ref = results["path"]
    assert len(ref) == 1
    face = ref[0]
    assert 0.0 <= face.p_attack <= 1.0 and face.verdict == ("attack" if face.p_attack >= det.threshold else "live")
    assert det.threshold == pytest.approx(det.scorer.threshold)  # the model's stored threshold
    assert 0.5 <= face.detector_confidence <= 1.0 and face.quality == () and face.quality_ok
    x, y, w, h = face.box
    assert 40 < x + w / 2 < 440 and 20 < y + h / 2 < 420 and w > 80
    for name, faces in results.items():
        assert len(faces) == 1, name
        assert faces[0].p_attack == pytest.approx(face.p_attack, abs=1e-4), name
        assert faces[0].box == pytest.approx(face.box, abs=1.0), name
    d = face.to_dict()
    assert set(d) == {"box", "p_attack", "verdict", "detector_confidence", "quality"}


def test_the_colour_order_is_never_guessed(det, portrait_bgr, tmp_path):
    """An RGB array passed as BGR is scored differently (the mistake is real), so the order must be stated:
    arrays default to BGR (documented); a wrong word, or ``color`` for a file or PIL image, is an error."""
    rgb = cv2.cvtColor(portrait_bgr, cv2.COLOR_BGR2RGB)
    right = det.score_image(rgb, color="rgb")[0].p_attack
    swapped = det.score_image(rgb)[0].p_attack  # the RGB array read as the default BGR
    assert abs(right - swapped) > 1e-3
    for bad in ("BGR ", "rgba", "", "hsv"):
        with pytest.raises(ValueError, match="color must be 'bgr'"):
            det.score_image(rgb, color=bad)
    path = tmp_path / "f.jpg"
    cv2.imwrite(str(path), portrait_bgr)
    with pytest.raises(ValueError, match="numpy arrays only"):
        det.score_image(path, color="rgb")
    from PIL import Image
    with pytest.raises(ValueError, match="numpy arrays only"):
        det.score_image(Image.fromarray(rgb), color="bgr")


def test_grey_bad_arrays_and_unreadable_files(det, portrait_bgr, tmp_path):
    grey = cv2.cvtColor(portrait_bgr, cv2.COLOR_BGR2GRAY)
    assert len(det.score_image(grey)) == 1 and len(det.score_image(grey[:, :, None])) == 1
    assert det.score_image(np.zeros((120, 160, 3), np.uint8)) == []  # no face: an empty list
    with pytest.raises(TypeError, match="uint8"):
        det.score_image(portrait_bgr.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        det.score_image(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(TypeError, match="path, a numpy array or a PIL image"):
        det.score_image([[0, 1], [2, 3]])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        det.score_image(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    from liveness_app.api import ImageReadError
    with pytest.raises(ImageReadError, match="text.jpg"):
        det.score_image(tmp_path / "text.jpg")


def test_two_faces_largest_first_and_max_faces(tmp_path):
    from liveness_app import LivenessDetector

    img = background(640, 360, seed=3).copy()
    img[70:290, 40:260] = cv2.resize(face_image("grace_hopper"), (220, 220))
    img[100:260, 420:580] = cv2.resize(face_image("grace_hopper"), (160, 160))
    with LivenessDetector(backend="torch", max_faces=1) as one, LivenessDetector(backend="torch") as det:
        faces = det.score_image(img)
        assert len(faces) == 2 and faces[0].box[2] > faces[1].box[2]  # largest first
        only = one.score_image(img)
        assert len(only) == 1 and only[0].box == pytest.approx(faces[0].box, abs=1.0)


def test_stream_tracks_and_smooths_a_video(det, tmp_path):
    path = tmp_path / "clip.mp4"
    placements = make_face_video(path, frames=12, fps=12.0)
    results = list(det.stream(path))
    assert [r.index for r in results] == list(range(len(placements)))
    k = det.config.track_confirm_hits - 1
    assert all(len(r.tracks) == 1 and r.tracks[0].track_id == 1 for r in results[k:])
    verdicts = [r.tracks[0].verdict for r in results[k:]]
    assert verdicts[0] == "uncertain" and verdicts[-1] in ("live", "attack")  # smoothing needs evidence
    assert len(list(det.stream(path, max_frames=3))) == 3
    from liveness_app.sources import SourceError
    with pytest.raises(SourceError, match="nope.mp4"):
        next(det.stream(tmp_path / "nope.mp4"))


def test_settings_are_validated_and_close_is_final(tmp_path):
    from liveness_app import LivenessDetector
    from liveness_app.config import ConfigError

    with pytest.raises(ConfigError, match="max_faces"):
        LivenessDetector(max_faces=0)
    with pytest.raises(ConfigError, match="backend must be one of"):
        LivenessDetector(backend="gpu")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        LivenessDetector(model=tmp_path / "nope.safetensors")
    det = LivenessDetector(backend="torch", threshold=0.0)
    assert [f.verdict for f in det.score_image(face_image("grace_hopper"))] == ["attack"]  # P >= 0 always
    det.close()
    det.close()
    with pytest.raises(RuntimeError, match="closed"):
        det.score_image(face_image("grace_hopper"))
