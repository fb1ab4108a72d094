"""One preprocessing: the app's scorer, the evaluation CLI and the trainer's dataset feed the model the same tensor."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import models
from models.training import evaluate
from models.training.train import CropDataset, _EvalWrap

PREP = models.Preprocessing(32, (0.40, 0.45, 0.50), (0.20, 0.25, 0.30))


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 160 px contract crop (RGB) with distinct channels, larger than the model input: every path resizes."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    img[:, :, 0] = np.linspace(0, 255, 160, dtype=np.uint8)[None]
    return img


def test_preprocess_is_the_stored_normalisation_in_rgb_order():
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (3, PREP.size, PREP.size, 3), dtype=np.uint8)
    x = models.preprocess(crops, PREP)
    want = ((crops.astype(np.float64) / 255.0 - np.array(PREP.mean)) / np.array(PREP.std)).transpose(0, 3, 1, 2)
    assert x.shape == (3, 3, PREP.size, PREP.size) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert models.preprocess([], PREP).shape == (0, 3, PREP.size, PREP.size)
    with pytest.raises(ValueError, match="crop 0: expected a uint8 RGB image"):
        models.preprocess([crops[0].astype(np.float32)], PREP)


def test_app_evaluation_and_training_give_identical_tensors(crop, tmp_path):
    from liveness_app.scorer import RuntimeScorer

    torch.manual_seed(0)
    model = models.create_model("test-tiny")
    ckpt = models.Checkpoint(model=model, config=model.config, preprocessing=PREP, prompts=tuple(model.config.prompts),
                             threshold=0.5)
    assert PREP != models.Preprocessing.from_config(model.config)  # the stored parameters, not the config's
    app = RuntimeScorer(ckpt).preprocess([crop])

    path = tmp_path / "crop.png"  # lossless: evaluation reads the file back in BGR and converts it
    assert cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    seen = []

    def score_fn(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return np.zeros(len(x), np.float32)

    evaluate.score_samples([SimpleNamespace(path=path)], score_fn, ckpt.preprocessing, workers=1)
    (ev,) = seen

    ds = CropDataset(crop[None], np.array([0]), _EvalWrap(PREP.size), ckpt.preprocessing)
    tr, label = ds[0]

    assert app.shape == ev.shape == (1, 3, PREP.size, PREP.size) and label == 0
    assert np.array_equal(app, ev)
    assert np.array_equal(app[0], tr.numpy())
    # a different resize rule or colour order would show: the checks above can fail
    other = cv2.resize(crop, (PREP.size, PREP.size), interpolation=cv2.INTER_LINEAR)
    assert not np.array_equal(app, models.preprocess(other, PREP))
    assert not np.array_equal(app, models.preprocess(crop[:, :, ::-1].copy(), PREP))
