"""Fault injection on faces with the real mediapipe detector: none, many, tiny, half outside, fast motion.

Many faces are real portraits (matplotlib's Grace Hopper, scikit-image's astronaut) tiled into one frame. The
short-range BlazeFace model sees a 128 px letterboxed frame, so it finds at most about nine faces tiled 3 x 3
(a 5 x 4 tiling of twenty finds one or none, measured below); the per-frame work bound (``max_faces``) is
therefore exercised with nine real detections, and the twenty-face frame checks that nothing breaks.
"""
import cv2
import numpy as np
import pytest

from liveness_app.config import AppConfig
from liveness_app.outputs import AuditLog
from liveness_app.pipeline import Pipeline
from liveness_app.scorer import create_scorer
from media import background, face_image

FACES = [face_image("grace_hopper"), face_image("astronaut")]


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint):
    return create_scorer(tiny_checkpoint, backend="torch")


def tiled(n_cols: int, n_rows: int, cell: int, *, offset=(0, 0), seed: int = 0) -> np.ndarray:
    """A frame of ``n_cols`` x ``n_rows`` real portraits, ``cell`` px each, shifted by ``offset`` (wrapping)."""
    frame = background(n_cols * cell, n_rows * cell, seed)
    for r in range(n_rows):
        for c in range(n_cols):
            frame[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = cv2.resize(FACES[(r + c + seed) % 2],
                                                                               (cell, cell))
    return np.roll(frame, offset, axis=(0, 1))


def test_nine_real_faces_are_capped_at_max_faces_largest_first(scorer):
    frame = tiled(3, 3, 300)
    with Pipeline(AppConfig(max_faces=4, track_confirm_hits=1, track_confirm_window=1), scorer) as pipeline:
        boxes = pipeline.detector.detect(frame, 0.0)
        assert len(boxes) >= 7  # real detections, more than max_faces
        result = pipeline.process(frame, 0.1, 1)
        again = pipeline.detector.detect(frame, 0.2)
    assert len(result.tracks) == 4 and result.dropped_faces == len(again) - 4
    kept_areas = sorted(t.box.area for t in result.tracks)
    assert kept_areas[0] >= sorted((b.area for b in boxes), reverse=True)[3] * 0.9


def test_twenty_faces_none_tiny_and_half_outside_never_crash(scorer):
    cases = {
        "twenty": tiled(5, 4, 250),
        "none": background(640, 480, 3),
        "black": np.zeros((480, 640, 3), np.uint8),
        "tiny": background(640, 480, 4),
        "half_outside": background(640, 480, 5),
    }
    cases["tiny"][200:230, 300:330] = cv2.resize(FACES[0], (30, 30))
    cases["half_outside"][60:460, 440:640] = cv2.resize(FACES[0], (400, 400))[:, :200]  # right half cut off
    with Pipeline(AppConfig(max_faces=4), scorer) as pipeline:
        for i, (name, frame) in enumerate(cases.items()):
            result = pipeline.process(frame, 0.1 * i, i)
            assert result.status == "ok" and len(result.tracks) <= 4, name
            if name in ("none", "black", "tiny"):
                assert result.tracks == (), name
            if name == "half_outside" and result.tracks:  # found: then the quality gate must reject it
                assert not pipeline.last_quality[result.tracks[0].track_id].ok


def test_fast_motion_keeps_tracks_smoothers_and_audit_state_bounded(scorer, tmp_path):
    """Faces jump a third of the frame every frame: tracks die and are born constantly; state stays bounded."""
    # every face shown at once (1 of 1): the jumping faces would otherwise stay tentative (tested below)
    config = AppConfig(max_faces=4, track_max_missed=5, track_confirm_hits=1, track_confirm_window=1)
    rng = np.random.default_rng(0)
    bound = config.max_faces * (config.track_max_missed + 2)
    with Pipeline(config, scorer) as pipeline, AuditLog(tmp_path / "audit.jsonl") as audit:
        for i in range(40):
            offset = (int(rng.integers(0, 900)), int(rng.integers(0, 900)))
            result = pipeline.process(tiled(3, 3, 300, offset=offset, seed=i), i / 15.0, i)
            audit.record(result, pipeline.last_crops)
            for tid in pipeline.ended_tracks:
                audit.forget(tid)
            assert len(result.tracks) <= config.max_faces
            assert len(pipeline.tracker.tracks) <= bound
            assert set(pipeline.smoothers) <= set(pipeline.tracker.tracks)
            assert len(pipeline.last_crops) <= config.max_faces
            assert set(audit._last) <= set(pipeline.tracker.tracks)
        assert pipeline.tracker.next_id > 3 * config.max_faces  # the motion really broke tracks many times


def test_jumping_faces_keep_the_tentative_candidates_bounded_with_the_default_confirmation(scorer):
    """The same motion with the default 3-of-5 rule: faces that jump are followed as tentative candidates;
    those stay bounded, and only confirmed tracks hold a smoother."""
    config = AppConfig(max_faces=4, track_max_missed=5)
    rng = np.random.default_rng(0)
    bound = config.max_faces * (config.track_max_missed + 2)
    with Pipeline(config, scorer) as pipeline:
        for i in range(30):
            offset = (int(rng.integers(0, 900)), int(rng.integers(0, 900)))
            result = pipeline.process(tiled(3, 3, 300, offset=offset, seed=i), i / 15.0, i)
            assert 0 < len(pipeline.tracker.tentative) <= bound
            assert len(pipeline.tracker.tracks) <= bound
            assert {t.track_id for t in result.tracks} <= set(pipeline.smoothers) <= set(pipeline.tracker.tracks)
