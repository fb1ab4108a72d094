"""Fault injection at the sources: unplugged camera, corrupt/truncated video, dirty image folder, odd frames, stalls.

No camera exists here, so the camera is a real ``cv2.VideoCapture`` over a clip behind a factory that fails and
recovers (tests/media.FlakyCamera); the reopen/back-off code (LatestFrameReader) and the headless loop are real.
"""
import json
import logging
import threading
import time

import cv2
import numpy as np
import pytest

from liveness_app import cli
from liveness_app.config import AppConfig
from liveness_app.outputs import JsonlWriter, RunSummary
from liveness_app.pipeline import Pipeline, as_bgr
from liveness_app.scorer import create_scorer
from liveness_app.session import Session, open_feed
from liveness_app.sources import SourceError, VideoCaptureSource, open_source
from media import FlakyCamera, face_image, make_image_folder


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint):
    return create_scorer(tiny_checkpoint, backend="torch")


class PluggableCamera:
    """Capture factory: camera works, is unplugged after ``fail_after`` frames, refuses ``refusals`` opens, returns."""

    def __init__(self, clip, fail_after=8, refusals=2):
        self.clip, self.fail_after, self.refusals = clip, fail_after, refusals
        self.opened_at: list[float] = []

    def __call__(self, spec):
        self.opened_at.append(time.monotonic())
        n = len(self.opened_at)
        if n == 1:
            return FlakyCamera(self.clip, fail_after=self.fail_after, fps=40.0)
        if n <= 1 + self.refusals:
            return FlakyCamera(self.clip, opens=False)
        return FlakyCamera(self.clip, fps=40.0)


def test_unplugged_camera_headless_reports_no_signal_and_resumes(face_clip, scorer, tmp_path, caplog):
    clip, _ = face_clip
    camera = PluggableCamera(clip)
    source = VideoCaptureSource(0, capture_factory=camera)
    config = AppConfig(source=0, reopen_backoff_s=0.05, reopen_backoff_max_s=0.4, no_signal_after_s=0.1,
                       max_frames=20, output=str(tmp_path / "v.jsonl"))
    summary, stop = RunSummary(), threading.Event()
    caplog.set_level(logging.INFO)
    with Pipeline(config, scorer) as pipeline, JsonlWriter(config.output) as writer:
        feed = open_feed(source, config)
        Session(config, pipeline, writer=writer, summary=summary).run(feed, stop, max_frames=config.max_frames)
        feed.stop()
    source.close()
    assert summary.frames == 20 and summary.no_signal == 1  # the outage is recorded once, then frames resume
    # the real back-off: 2 refused opens then success; the waits double (0.05, 0.1, 0.2 s)
    gaps = np.diff(camera.opened_at)
    assert len(camera.opened_at) == 4
    assert gaps[1] >= 0.09 and gaps[2] >= 0.18, gaps
    assert "no signal" in caplog.text and "reopened" in caplog.text
    recs = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert len(recs) == 20 and all(r["frame"] < s["frame"] for r, s in zip(recs, recs[1:]))


class StallingCapture:
    """A real capture over a clip whose read() blocks after ``stall_after`` frames until released (a hung stream)."""

    def __init__(self, clip, stall_after=5):
        self.cap, self.stall_after, self.reads = cv2.VideoCapture(str(clip)), stall_after, 0
        self.release_stall = threading.Event()

    def isOpened(self):  # noqa: N802
        return self.cap.isOpened()

    def read(self):
        self.reads += 1
        if self.reads > self.stall_after:
            self.release_stall.wait(10.0)
            return False, None
        time.sleep(0.01)
        return self.cap.read()

    def get(self, prop):
        return self.cap.get(prop)

    def set(self, prop, value):
        return self.cap.set(prop, value)

    def release(self):
        self.release_stall.set()
        self.cap.release()


def test_stalled_stream_is_no_signal_and_the_loop_keeps_control(face_clip, scorer):
    clip, _ = face_clip
    captures = []

    def factory(spec):
        captures.append(StallingCapture(clip))
        return captures[-1]

    source = VideoCaptureSource("rtsp://example.invalid/stream", live=True, capture_factory=factory)
    config = AppConfig(reopen_backoff_s=0.05, no_signal_after_s=0.2)
    summary, stop = RunSummary(), threading.Event()

    def operator():  # stops the run once the stall was reported (or after a generous deadline on a slow machine)
        deadline = time.monotonic() + 15.0
        while summary.no_signal < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a little longer: the stall must be reported once, not once per loop pass
        stop.set()

    threading.Thread(target=operator, daemon=True).start()
    t0 = time.monotonic()
    with Pipeline(config, scorer) as pipeline:
        feed = open_feed(source, config)
        Session(config, pipeline, summary=summary).run(feed, stop)  # must return although read() hangs
        feed.stop()
    elapsed = time.monotonic() - t0
    captures[0].release_stall.set()
    source.close()
    assert 1 <= summary.frames <= 5 and summary.no_signal == 1  # latest-frame reader: some may be skipped
    assert elapsed < 20.0  # stop() joins with a timeout; a blocked driver never hangs the app


def test_truncated_and_corrupt_videos_end_cleanly(face_clip, tiny_checkpoint, tmp_path, capsys):
    clip, placements = face_clip
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the moov atom (index) of mp4v files is at the end
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    header_only = tmp_path / "header.mp4"
    header_only.write_bytes(data[:2000])
    for bad in (truncated, garbage, header_only):
        try:
            with open_source(str(bad)) as src:
                n = sum(1 for _ in iter(src.read, None))
            assert n < len(placements)
        except SourceError as e:
            assert bad.name in str(e)
        rc = cli.main(["--headless", "--source", str(bad), "--model", str(tiny_checkpoint), "--backend", "torch",
                       "--output", str(tmp_path / "o.jsonl")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc in (0, 2)
        if rc == 2:  # one line naming the file, no traceback
            assert len(err) == 1 and bad.name in err[0] and "Traceback" not in err[0], err


def test_image_folder_with_non_images_and_unreadable_files(tmp_path, caplog):
    folder = make_image_folder(tmp_path / "imgs", frames=3)
    (folder / "readme.txt").write_text("not an image")
    (folder / "001b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a png header and nothing else
    (folder / "002b.jpg").write_bytes((folder / "002.png").read_bytes()[:300])  # truncated
    (folder / "dir.png").mkdir()  # a folder with an image name
    caplog.set_level(logging.WARNING)
    with open_source(str(folder)) as src:
        frames = list(iter(src.read, None))
    assert len(frames) == 3 and [f.index for f in frames] == [0, 1, 2]
    assert all(f.image.shape == (360, 480, 3) for f in frames)
    assert "001b.png" in caplog.text and "dir.png" in caplog.text
    with open_source(str(folder), loop=True) as src:  # looping over a dirty folder never spins or stops
        assert len([src.read() for _ in range(8)]) == 8


def test_odd_frames_tiny_4k_grey_alpha_16bit(scorer):
    face = face_image()
    big = np.zeros((2160, 3840, 3), np.uint8)
    big[380:1780, 1220:2620] = cv2.resize(face, (1400, 1400))
    frames = {
        "1x1": np.zeros((1, 1, 3), np.uint8),
        "tiny": cv2.resize(face, (12, 12)),
        "4k": big,
        "grey": cv2.cvtColor(cv2.resize(face, (320, 320)), cv2.COLOR_BGR2GRAY),
        "grey1": cv2.cvtColor(cv2.resize(face, (320, 320)), cv2.COLOR_BGR2GRAY)[:, :, None],
        "alpha": cv2.cvtColor(cv2.resize(face, (320, 320)), cv2.COLOR_BGR2BGRA),
        "16bit": cv2.resize(face, (320, 320)).astype(np.uint16) * 257,
        "float": cv2.resize(face, (320, 320)).astype(np.float32) / 255.0,
    }
    # each odd frame is judged alone: a face is a track at once (1 of 1), not after 3 of 5 frames
    with Pipeline(AppConfig(track_confirm_hits=1, track_confirm_window=1), scorer) as pipeline:
        for i, (name, image) in enumerate(frames.items()):
            result = pipeline.process(image, i * 0.1, i)
            assert result.status == "ok", name
            if name in ("4k", "grey", "grey1", "alpha", "16bit", "float"):
                assert len(result.tracks) == 1, name  # the face is still found after conversion
    assert as_bgr(frames["alpha"]).shape == (320, 320, 3)
    with pytest.raises(ValueError, match="shape"):
        as_bgr(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        as_bgr(np.zeros((4, 4, 3), np.complex64))
