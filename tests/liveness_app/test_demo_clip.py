"""The bundled stakeholder demo clip (assets/demo.mp4 + demo.json) and the script that rebuilds it.

Checks the shipped file as it is (opens with OpenCV, documented length / fps / size, sidecar segments cover
it, the real mediapipe detector finds the face in most sampled frames of every segment, the caption stays
off the face), and rebuilds a tiny clip with scripts/make_demo_clip.py to prove the script works and is
deterministic.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "assets" / "demo.mp4"
SIDECAR = ROOT / "assets" / "demo.json"
DETECTOR = ROOT / "assets" / "face_detection_short_range.tflite"
SAMPLE_EVERY = 3  # detector on every 3rd frame: 200 of 600 frames, a few seconds on a laptop CPU


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_clip", ROOT / "scripts" / "make_demo_clip.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is being built
    spec.loader.exec_module(mod)
    return mod


def _read_frames(path: Path, every: int = 1) -> tuple[list[int], list[np.ndarray], int]:
    """Decode a video; return (indices kept, BGR frames kept, total frames decoded)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"OpenCV cannot open {path}"
    idx, frames, n = [], [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if n % every == 0:
                idx.append(n)
                frames.append(frame)
            n += 1
    finally:
        cap.release()
    return idx, frames, n


@pytest.fixture(scope="module")
def sidecar() -> dict:
    return json.loads(SIDECAR.read_text(encoding="utf-8"))


def test_clip_opens_with_documented_format(sidecar: dict) -> None:
    cap = cv2.VideoCapture(str(CLIP))
    assert cap.isOpened(), f"OpenCV cannot open {CLIP}"
    try:
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    assert fourcc.lower() in ("mp4v", "fmp4"), f"codec {fourcc!r}: expected MPEG-4 Part 2 (mp4v)"
    assert (w, h) == (640, 480) == tuple(sidecar["size"])
    assert fps == pytest.approx(15.0) and sidecar["fps"] == pytest.approx(fps)
    _, _, n = _read_frames(CLIP, every=10 ** 9)  # decode every frame, keep none: the true count
    assert n == sidecar["frames"]
    assert 35.0 <= n / fps <= 45.0 and sidecar["seconds"] == pytest.approx(n / fps)
    assert CLIP.stat().st_size < 8_000_000, "the bundled clip must stay under 8 MB"


def test_sidecar_segments_cover_the_clip(sidecar: dict) -> None:
    segs = sidecar["segments"]
    assert [s["name"] for s in segs] == ["live", "print", "replay", "faceswap"]
    assert [s["label"] for s in segs] == ["live", "attack", "attack", "attack"]
    assert [s["attack_type"] for s in segs] == ["none", "print", "replay", "faceswap"]
    fps = sidecar["fps"]
    assert segs[0]["start_frame"] == 0 and segs[0]["start"] == 0.0
    assert segs[-1]["end_frame"] == sidecar["frames"]
    for a, b in zip(segs, segs[1:]):
        assert a["end_frame"] == b["start_frame"], "segments must be contiguous"
    for s in segs:
        assert s["start"] == pytest.approx(s["start_frame"] / fps)
        assert s["end"] == pytest.approx(s["end_frame"] / fps)
        assert 8.0 <= s["end"] - s["start"] <= 12.0
    names = {src["name"] for src in sidecar["sources"]}
    assert names == {"grace_hopper.jpg", "astronaut"}
    assert all("public domain" in src["licence"] for src in sidecar["sources"])


def test_face_detected_in_every_segment(sidecar: dict) -> None:
    """Real mediapipe short-range FaceDetector (confidence 0.5) on sampled frames: >= 90 % per segment."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    idx, frames, _ = _read_frames(CLIP, every=SAMPLE_EVERY)
    opts = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(DETECTOR)),
                                      running_mode=vision.RunningMode.IMAGE, min_detection_confidence=0.5)
    h = frames[0].shape[0]
    # The caption lives in the bottom-left corner: it must not overlap any detected face.
    caption = (0, h - 30, 320, h)  # x0, y0, x1, y1
    found: dict[int, bool] = {}
    with vision.FaceDetector.create_from_options(opts) as det:
        for i, frame in zip(idx, frames):
            rgb = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            res = det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            found[i] = len(res.detections) > 0
            for d in res.detections:
                b = d.bounding_box
                overlap = not (b.origin_x + b.width <= caption[0] or b.origin_x >= caption[2]
                               or b.origin_y + b.height <= caption[1] or b.origin_y >= caption[3])
                assert not overlap, f"frame {i}: face box {b} under the caption"
    for s in sidecar["segments"]:
        hits = [found[i] for i in idx if s["start_frame"] <= i < s["end_frame"]]
        assert len(hits) >= 20
        rate = sum(hits) / len(hits)
        assert rate >= 0.9, f"segment {s['name']}: face found in only {rate:.0%} of sampled frames"


def test_script_rebuilds_a_small_clip_deterministically(tmp_path: Path) -> None:
    mod = _load_script()
    out1, out2 = tmp_path / "a.mp4", tmp_path / "b.mp4"
    args = ["--seconds", "4", "--fps", "4", "--size", "320x240", "--seed", "3"]
    assert mod.main(["--out", str(out1), *args]) == 0
    side = json.loads(out1.with_suffix(".json").read_text(encoding="utf-8"))
    assert side["frames"] == 16 and side["size"] == [320, 240]
    assert [s["end_frame"] - s["start_frame"] for s in side["segments"]] == [4, 4, 4, 4]
    _, frames1, n = _read_frames(out1)
    assert n == 16 and frames1[0].shape == (240, 320, 3)
    # Segments really differ: the live frame and the replay frame are not the same picture.
    assert np.abs(frames1[0].astype(int) - frames1[8].astype(int)).mean() > 5
    assert mod.main(["--out", str(out2), *args]) == 0
    _, frames2, _ = _read_frames(out2)
    assert all(np.array_equal(a, b) for a, b in zip(frames1, frames2)), "same seed must give the same clip"


def test_script_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load_script()
    with pytest.raises(SystemExit):
        mod.main(["--size", "640by480", "--out", str(tmp_path / "x.mp4")])
    assert "640by480" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mod.main(["--out", str(tmp_path / "x.avi")])
    assert "x.avi" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--seconds 2"):
        mod.build(tmp_path / "x.mp4", 2, 15, (640, 480), 0)
