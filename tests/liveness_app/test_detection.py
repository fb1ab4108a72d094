"""The mediapipe Tasks face detector wrapper, on real portraits and a real video clip."""
import gc
import logging
import threading

import cv2
import numpy as np
import pytest

from liveness_app.config import DEFAULT_DETECTOR
from liveness_app.detection import FaceDetector
from liveness_app.sources import open_source
from liveness_app.types import FaceBox
from media import background, face_image


@pytest.fixture(scope="module")
def detector():
    with FaceDetector(DEFAULT_DETECTOR, 0.5) as d:
        yield d


def test_finds_the_face_in_a_real_portrait(detector):
    frame = background(640, 480)
    frame[40:440, 120:520] = face_image()
    boxes = detector.detect(frame, 0.0)
    assert len(boxes) == 1
    b = boxes[0]
    assert isinstance(b, FaceBox) and 0.5 <= b.score <= 1.0
    # the portrait's face (x171 y146 194x194 in the original, shifted by the paste and the 56/60 px cut)
    assert abs(b.x - (171 - 56 + 120)) < 30 and abs(b.y - (146 - 60 + 40)) < 30 and 150 < b.w < 240


def test_no_face_in_a_background(detector):
    assert detector.detect(background(640, 480, seed=3), 1.0) == []


def test_timestamps_strictly_increase_even_for_repeated_or_earlier_times(detector):
    frame = background(320, 240)
    detector.detect(frame, 50.0)
    detector.detect(frame, 50.0)  # mediapipe raises on a repeated timestamp in VIDEO mode; we bump it
    detector.detect(frame, 1.0)
    assert detector.timestamp_ms(0.0) == 50_003
    assert detector.timestamp_ms(60.0) == 60_000


def test_detects_the_face_in_every_frame_of_a_video(detector, face_clip):
    path, placements = face_clip
    src = open_source(str(path))
    n = 0
    while (frame := src.read()) is not None:
        boxes = detector.detect(frame.image, frame.t)
        assert len(boxes) == 1, f"frame {frame.index}: {boxes}"
        p = placements[frame.index][0]
        cx, cy = boxes[0].x + boxes[0].w / 2, boxes[0].y + boxes[0].h / 2
        assert p.x < cx < p.x + p.side and p.y < cy < p.y + p.side  # inside the pasted portrait
        n += 1
    src.close()
    assert n == len(placements)


def test_bad_input_and_close():
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        FaceDetector("assets/nope.tflite")
    d = FaceDetector()
    with pytest.raises(ValueError, match="BGR uint8"):
        d.detect(np.zeros((10, 10), np.uint8), 0.0)
    d.close()
    d.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        d.detect(np.zeros((10, 10, 3), np.uint8), 0.0)


def test_an_unclosed_detector_in_a_reference_cycle_is_collected_without_hanging(caplog):
    """mediapipe's own finaliser closes a detector through the detector's executor thread; for a detector in a
    reference cycle the collector has already told that thread to exit, so the thread that collected the garbage
    waited for ever (any thread: a worker QThread, a log reader, the main thread), with every later collection of
    the process blocked behind it. An unclosed detector must be released, with a warning, from any thread."""
    for still in (False, True):  # two of them: with one alone the collector happens not to hang
        d = FaceDetector(still_images=still)
        d.detect(np.zeros((120, 160, 3), np.uint8), 0.0)
        d.cycle = d  # only the cyclic collector can free it now
    del d
    done = threading.Event()

    def collect() -> None:
        gc.collect()
        done.set()

    with caplog.at_level(logging.WARNING, logger="liveness_app.detection"):
        threading.Thread(target=collect, name="collector", daemon=True).start()
        assert done.wait(60), "gc.collect() hung finalising an unclosed FaceDetector"
    assert "without close()" in caplog.text
