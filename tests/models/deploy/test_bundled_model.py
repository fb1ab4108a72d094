"""Golden outputs of the bundled model on real face crops cut by the real detector and crop contract.

Regenerate after retraining (and say so in the commit): ``.venv/bin/python tests/models/deploy/test_bundled_model.py --write``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
BUNDLED = ROOT / "assets" / "liveness_default.safetensors"
GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "bundled_model.json"


def _images() -> dict[str, np.ndarray]:
    """Real portraits shipped in packages (BGR), and a printed-sheet version of one (halftone + paper cast)."""
    import matplotlib.cbook as cbook
    from skimage import data as skdata

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    astronaut = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    yy, xx = np.mgrid[0:hopper.shape[0], 0:hopper.shape[1]]
    dots = (np.sin(xx * 1.1) * np.sin(yy * 1.1) > 0).astype(np.float32)[..., None]
    printed = np.clip(hopper * (0.6 + 0.3 * dots) * np.array([0.9, 1.0, 1.08]) + 25, 0, 255).astype(np.uint8)
    return {"grace_hopper": hopper, "astronaut": astronaut, "grace_hopper_halftone": printed}


def _crops(size: int) -> dict[str, np.ndarray]:
    """Each image's largest face, cut by the contract at ``size`` (RGB)."""
    from liveness_app.crop import crop_face
    from liveness_app.detection import FaceDetector

    out = {}
    with FaceDetector() as det:
        for i, (name, img) in enumerate(_images().items()):
            boxes = det.detect(img, float(i))
            assert boxes, f"no face found in {name}"
            box = max(boxes, key=lambda b: b.area)
            out[name] = cv2.cvtColor(crop_face(img, box, size), cv2.COLOR_BGR2RGB)
    return out


def _score(backend: str) -> tuple[dict[str, float], object]:
    from liveness_app.scorer import create_scorer

    scorer = create_scorer(BUNDLED, backend=backend)
    crops = _crops(scorer.input_size)
    scores = scorer.score(list(crops.values()))
    return dict(zip(crops, map(float, scores))), scorer


needs_model = pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled model not present")


@needs_model
def test_golden_file_belongs_to_the_bundled_weights():
    golden = json.loads(GOLDEN.read_text())
    assert golden["sha256"] == hashlib.sha256(BUNDLED.read_bytes()).hexdigest(), \
        "assets/liveness_default.safetensors changed: regenerate tests/golden/bundled_model.json"


@needs_model
@pytest.mark.parametrize("backend,tol", [("torch", 1e-5), ("cpu", 1e-4)])
def test_bundled_scores_match_golden(backend, tol):
    golden = json.loads(GOLDEN.read_text())
    scores, scorer = _score(backend)
    assert set(scores) == set(golden["scores"])
    for name, want in golden["scores"].items():
        assert scores[name] == pytest.approx(want, abs=tol), (name, scorer.backend_name)
    assert scorer.threshold == pytest.approx(golden["threshold"])


if __name__ == "__main__" and "--write" in sys.argv:
    from models import load_checkpoint

    scores, scorer = _score("torch")
    GOLDEN.write_text(json.dumps({"sha256": hashlib.sha256(BUNDLED.read_bytes()).hexdigest(),
                                  "threshold": load_checkpoint(BUNDLED).threshold, "backend": scorer.backend_name,
                                  "scores": scores}, indent=1) + "\n")
    print(GOLDEN.read_text())
