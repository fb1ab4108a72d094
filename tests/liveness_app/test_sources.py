"""Frame sources on real files, the latest-frame reader, and reopening a camera that fails mid-run.

No camera exists on CI machines: the failing camera is a real ``cv2.VideoCapture`` over a video file wrapped
to stop delivering (as an unplugged webcam does) and to refuse the next opens; everything else is real.
"""
import time

import cv2
import numpy as np
import pytest

from liveness_app.sources import (Frame, ImageFolderSource, LatestFrameReader, SourceError,
                                  VideoCaptureSource, open_source)
from media import FlakyCamera, make_face_video, make_image_folder


def read_all(src):
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    return frames


def test_video_file_uses_file_timestamps(face_clip):
    path, placements = face_clip
    with open_source(str(path)) as src:
        assert not src.is_live and src.fps == pytest.approx(12.0)
        frames = read_all(src)
    assert [f.index for f in frames] == list(range(len(placements)))
    np.testing.assert_allclose([f.t for f in frames], np.arange(len(frames)) / 12.0, atol=1e-3)
    assert frames[0].image.shape == (360, 480, 3) and frames[0].image.dtype == np.uint8


def test_looping_video_keeps_time_and_index_increasing(face_clip):
    path, placements = face_clip
    n = len(placements)
    with open_source(str(path), loop=True) as src:
        frames = [src.read() for _ in range(2 * n + 5)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(2 * n + 5))
    np.testing.assert_allclose([f.t for f in frames], np.arange(2 * n + 5) / 12.0, atol=1e-3)
    np.testing.assert_array_equal(frames[n].image, frames[0].image)  # it really restarted


def test_image_folder(tmp_path):
    make_image_folder(tmp_path / "imgs", frames=4)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    with open_source(str(tmp_path / "imgs")) as src:
        assert isinstance(src, ImageFolderSource)
        frames = read_all(src)
    assert [f.t for f in frames] == [0.0, 0.1, 0.2, 0.3] and len(frames) == 4
    with open_source(str(tmp_path / "imgs"), loop=True, folder_fps=2.0) as src:
        assert [src.read().t for _ in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(SourceError, match="missing.mp4"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video")
    with pytest.raises(SourceError, match="junk.mp4"):
        open_source(str(tmp_path / "junk.mp4"))


def test_digits_and_urls_open_live_captures(face_clip):
    path, _ = face_clip
    opened = []

    def factory(spec):
        opened.append(spec)
        return cv2.VideoCapture(str(path))

    src = open_source("1", capture_factory=factory)
    assert opened == [1] and src.is_live
    t0 = time.monotonic()
    f = src.read()
    assert t0 <= f.t <= time.monotonic()  # cameras are stamped with the capture time
    src.close()
    assert open_source("rtsp://example.invalid/cam", capture_factory=factory).is_live
    assert opened[-1] == "rtsp://example.invalid/cam"


def test_camera_that_fails_mid_run_is_reopened_with_backoff(face_clip):
    path, _ = face_clip
    plan = [dict(fail_after=5), dict(opens=False), dict(opens=False), dict()]  # dies, 2 failed reopens, back
    made = []

    def factory(spec):
        made.append(time.monotonic())
        return FlakyCamera(path, **plan[min(len(made) - 1, len(plan) - 1)])

    src = VideoCaptureSource(0, capture_factory=factory)
    reader = LatestFrameReader(src, backoff_s=0.05, backoff_max_s=1.0, no_signal_after_s=0.5).start()
    got, statuses = [], set()
    deadline = time.monotonic() + 10
    while len(got) < 12 and time.monotonic() < deadline:
        statuses.add(reader.status)
        f = reader.latest(timeout=0.02)
        if f is not None:
            got.append(f)
    assert reader.stop(timeout=2.0)
    assert len(got) >= 12, (len(got), statuses)
    assert "no signal" in statuses
    assert reader.reopen_attempts == 3 and reader.reopens == 1 and len(made) == 4
    gaps = np.diff(made[1:])  # back-off doubles: 0.05 -> 0.1 -> 0.2 s between attempts
    assert gaps[0] >= 0.09 and gaps[1] >= 0.18
    idx = [f.index for f in got]
    assert idx == sorted(set(idx))  # indices keep increasing across the reopen
    assert all(b.t > a.t for a, b in zip(got, got[1:]))


class SlowSource:
    """A live source that produces numbered frames as fast as asked (a camera faster than the consumer)."""

    is_live, spec, fps = True, "fake", 1000.0

    def __init__(self):
        self.i = 0

    def read(self):
        time.sleep(0.002)
        self.i += 1
        return Frame(np.zeros((4, 4, 3), np.uint8), time.monotonic(), self.i - 1)

    def reopen(self):
        return True

    def close(self):
        pass


def test_latest_frame_wins_and_nothing_queues():
    reader = LatestFrameReader(SlowSource()).start()
    taken = []
    for _ in range(5):
        time.sleep(0.05)  # a slow model
        taken.append(reader.latest(timeout=1.0))
    assert reader.stop()
    idx = [f.index for f in taken]
    assert all(b - a > 3 for a, b in zip(idx, idx[1:])), idx  # frames in between were skipped, not queued
    assert reader.frames_dropped >= reader.frames_read - len(taken) - 1
    reader.latest()  # at most one frame arrived after the last take
    assert reader.latest() is None  # each frame is returned once at most


def test_end_of_file_and_cooperative_stop(tmp_path):
    make_face_video(tmp_path / "c.mp4", frames=5)
    reader = LatestFrameReader(open_source(str(tmp_path / "c.mp4"))).start()
    deadline = time.monotonic() + 5
    while reader.status != "end of stream" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.status == "end of stream" and reader.frames_read == 5
    assert reader.latest().index == 4  # the newest one
    assert reader.stop()

    # a stop during a long back-off returns at once instead of waiting the back-off out
    class Dead(SlowSource):
        def read(self):
            return None

        def reopen(self):
            return False

    reader = LatestFrameReader(Dead(), backoff_s=30.0, backoff_max_s=30.0).start()
    time.sleep(0.05)
    assert reader.status == "no signal"
    t0 = time.monotonic()
    assert reader.stop(timeout=2.0) and time.monotonic() - t0 < 1.0
    assert not reader.running


def test_missing_camera_probe_is_one_clear_error_without_opencv_noise(tmp_path):
    """OpenCV prints ~10 lines per failed camera open; a kiosk retrying an unplugged camera must not flood the
    journal with them. The noise is written by native code to file descriptor 2, so that is what is captured."""
    import os
    import sys

    log = tmp_path / "fd2.txt"
    level = cv2.utils.logging.getLogLevel()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log, "wb") as f:
            os.dup2(f.fileno(), 2)
            try:
                open_source(63).close()  # far past any index a test machine has
                opened = True
            except SourceError as e:
                opened = False
                assert "cannot open camera 63" in str(e)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    noise = log.read_text(errors="replace")
    assert "VIDEOIO" not in noise and "cap_" not in noise, noise
    assert opened or noise == ""
    assert cv2.utils.logging.getLogLevel() == level  # restored after the probe
