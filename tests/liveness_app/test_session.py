"""The one run loop (liveness_app/session.py) that the headless CLI and the GUI worker drive."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from liveness_app.config import AppConfig
from liveness_app.outputs import JsonlWriter, RunSummary
from liveness_app.session import SequentialFeed, Session
from liveness_app.sources import Frame, FrameSource
from liveness_app.types import FaceBox, FrameResult, Notice, Scorer, TrackResult


class ListSource(FrameSource):
    def __init__(self, n: int):
        self.spec, self.is_live, self.fps, self.i, self.n = "list", False, 10.0, 0, n

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return Frame(np.zeros((4, 4, 3), np.uint8), self.i / 10, self.i - 1)

    def close(self):
        pass


class FakePipeline:
    """Pipeline's surface as the session uses it; ``fail_from`` makes process() raise from that frame on."""

    def __init__(self, fail_from: int | None = None):
        self.fail_from, self.processed, self.closed = fail_from, 0, False
        self.last_crops, self.ended_tracks = {}, []

    def process(self, image, t, index):
        if self.fail_from is not None and index >= self.fail_from:
            raise RuntimeError("backend died")
        self.processed += 1
        track = TrackResult(1, FaceBox(0, 0, 2, 2), 0.9, 0.9, "attack")
        return FrameResult(index=index, t=t, frame=None, tracks=(track,))

    def status_result(self, index, t, status):
        return FrameResult(index=index, t=t, frame=None, status=status)

    def close(self):
        self.closed = True


class BrokenWriter:
    path = "broken.jsonl"
    closed = False

    def write(self, result):
        raise OSError("disk full")

    def close(self):
        self.closed = True


def test_a_file_is_scored_frame_by_frame_recorded_and_its_end_reported_once(tmp_path):
    out = tmp_path / "v.jsonl"
    statuses, results = [], []
    summary = RunSummary()
    session = Session(AppConfig(), FakePipeline(), writer=JsonlWriter(out), summary=summary,
                      on_result=results.append, on_status=lambda s, d: statuses.append(s))
    session.run(SequentialFeed(ListSource(7)), threading.Event())
    session.close()
    assert summary.frames == 7 and len(results) == 7 and session.scored == 7
    assert [json.loads(x)["frame"] for x in out.read_text().splitlines()] == list(range(7))
    assert statuses == ["end of stream"]


def test_max_frames_and_stop_end_the_loop():
    session = Session(AppConfig(), FakePipeline())
    session.run(SequentialFeed(ListSource(50)), threading.Event(), max_frames=5)
    assert session.scored == 5
    stop = threading.Event()
    stop.set()
    idle = Session(AppConfig(), FakePipeline())
    idle.run(SequentialFeed(ListSource(50)), stop)
    assert idle.scored == 0


def test_a_failing_writer_raises_headless_and_is_a_notice_in_the_gui():
    with pytest.raises(OSError, match="disk full"):
        Session(AppConfig(), FakePipeline(), writer=BrokenWriter()).run(SequentialFeed(ListSource(3)),
                                                                        threading.Event())
    notices: list[Notice] = []
    writer = BrokenWriter()
    session = Session(AppConfig(), FakePipeline(), writer=writer, on_notice=notices.append)
    session.run(SequentialFeed(ListSource(3)), threading.Event())
    assert session.scored == 3 and writer.closed and session.writer is None
    assert notices == [Notice("record", "error", "Recording stopped: disk full")]


def test_recording_on_request_says_so_in_typed_notices(tmp_path):
    notices: list[Notice] = []
    session = Session(AppConfig(), FakePipeline(), on_notice=notices.append)
    session.set_recording(tmp_path / "r.jsonl")
    session.run(SequentialFeed(ListSource(2)), threading.Event())
    session.set_recording(None)
    assert [(n.topic, n.level, n.transient) for n in notices] == [("record", "info", False),
                                                                   ("record", "info", True)]
    assert notices[1].text.startswith("Recording saved") and "(2 frames)" in notices[1].text


def test_repeated_scoring_failures_stop_scoring_with_an_error_status():
    statuses, stop = [], threading.Event()

    def on_status(status, detail):
        statuses.append((status, detail))
        stop.set()  # the GUI runs on without verdicts until the user stops

    pipeline = FakePipeline(fail_from=2)
    session = Session(AppConfig(), pipeline, on_status=on_status)
    session.run(SequentialFeed(ListSource(20)), stop, max_failures=3)
    assert pipeline.processed == 2 and not session.scoring
    assert statuses == [("error", "backend died")]
    with pytest.raises(RuntimeError, match="backend died"):  # headless: the first failure ends the run
        Session(AppConfig(), FakePipeline(fail_from=0)).run(SequentialFeed(ListSource(3)), threading.Event())


def test_the_app_scorer_is_a_scorer(tiny_checkpoint):
    from liveness_app.scorer import create_scorer

    assert isinstance(create_scorer(tiny_checkpoint, backend="torch"), Scorer)
    assert not isinstance(object(), Scorer)
