"""The main window offscreen with the real engine: OpenCV video files, mediapipe detection, a tiny real
La-SoftMoE CLIP checkpoint scored by torch, the worker QThread, and the window's own controls."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from liveness_app.config import AppConfig  # noqa: E402
from liveness_app.ui.main_window import MainWindow  # noqa: E402
from liveness_app.ui.settings import SettingsStore  # noqa: E402
from liveness_app.ui.worker import NO_CAMERA_DEMO, WorkerController  # noqa: E402

START_S = 60_000  # ms allowed for model + detector start on a busy CI machine


def torch_scorer(model, backend="auto"):
    """The real scorer on the torch engine (no OpenVINO compile per test); the backend picker is tested apart."""
    from liveness_app.scorer import create_scorer
    return create_scorer(model, backend="torch")


class SlowScorer:
    """A real scorer whose calls take at least ``delay`` seconds: a model slower than the camera."""

    def __init__(self, inner, delay: float):
        self._inner, self.delay = inner, delay
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def score(self, crops):
        self.calls += 1
        time.sleep(self.delay)
        return self._inner.score(crops)


@pytest.fixture
def make_window(qtbot, tmp_path):
    """Builds windows on the real engine; keeps them alive for the test and closes them (workers stopped) after."""
    windows: list[MainWindow] = []

    def make(config: AppConfig, *, factory=torch_scorer, demo_video=None) -> MainWindow:
        controller = WorkerController(create_scorer=factory, **({"demo_video": demo_video} if demo_video else {}))
        window = MainWindow(config, settings=SettingsStore(tmp_path / "settings.ini"), controller=controller)
        window.snapshot_dir = tmp_path / "snapshots"
        qtbot.addWidget(window)
        window.resize(1200, 760)
        window.show()
        windows.append(window)
        return window

    yield make
    for w in windows:
        w.close()  # waits SHUTDOWN_WAIT_S at most; on a loaded machine a frame in flight may finish later
        qtbot.waitUntil(lambda: w.controller.idle, timeout=10_000)


def thread_stacks() -> str:
    """Every Python thread's name and innermost frames, then every OS thread's native stack when gdb is
    installed (for a failure message: a thread that waits in C++ or for the GIL has no Python frame)."""
    import os
    import shutil
    import subprocess
    import sys
    import traceback
    names = {t.ident: t.name for t in threading.enumerate()}
    text = "\n".join(f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame, limit=8))
                      for ident, frame in sys._current_frames().items())
    if shutil.which("gdb"):
        try:
            native = subprocess.run(["gdb", "-p", str(os.getpid()), "-batch", "-nx", "-ex", "thread apply all bt 12"],
                                    capture_output=True, text=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as e:
            native = f"(gdb failed: {e})"
        text += "\n--- native (gdb)\n" + "\n".join(line for line in native.splitlines()
                                                   if line.startswith(("Thread ", "#")))
    return text


def wait_for_faces(qtbot, window: MainWindow, timeout: int = START_S, decided: bool = False) -> None:
    def ok() -> bool:
        r = window.last_result
        return r is not None and len(r.tracks) > 0 and (not decided or any(t.verdict != "uncertain"
                                                                           for t in r.tracks))
    qtbot.waitUntil(ok, timeout=timeout)


@pytest.fixture(scope="module")
def two_face_clip(tmp_path_factory):
    from media import make_face_video
    path = tmp_path_factory.mktemp("media2") / "two.mp4"
    make_face_video(path, frames=24, fps=12.0, size=(640, 360), faces=("grace_hopper", "grace_hopper"),
                    face_side=(150, 150), path_xy=[((0.25, 0.5), (0.27, 0.5)), ((0.75, 0.5), (0.73, 0.5))])
    return path


@pytest.fixture(scope="module")
def empty_clip(tmp_path_factory):
    from media import make_face_video
    path = tmp_path_factory.mktemp("media3") / "empty.mp4"
    make_face_video(path, frames=12, fps=12.0, faces=())
    return path


def test_window_plays_video_through_pipeline_and_stops_cleanly(qtbot, make_window, tmp_path,
                                                               tiny_checkpoint, face_clip):
    clip, _ = face_clip
    cfg = AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint), expert_weights=True)
    w = make_window(cfg)
    wait_for_faces(qtbot, w)
    qtbot.waitUntil(lambda: w.frames_shown >= 5, timeout=10_000)
    # overlays are drawn for the detected face, on the newest frame
    w.video_view.grab()
    assert w.video_view.overlay_count == len(w.last_result.tracks) >= 1
    box = w.last_result.tracks[0].box
    assert 0 <= box.x < 480 and 0 <= box.y < 360 and box.w > 40
    assert w.banner.text() in ("LIVE", "ATTACK", "UNCERTAIN")
    # the selected face follows the main face; its history feeds the plot; its routing feeds the panel
    assert w.selected == w.last_result.tracks[0].track_id
    qtbot.waitUntil(lambda: len(w.score_plot.history.points(w.selected)) >= 2, timeout=20_000)
    qtbot.waitUntil(lambda: w.experts_panel.weights is not None and len(w.experts_panel.weights) > 0,
                    timeout=20_000)
    weights = np.array(w.experts_panel.weights)
    assert weights.shape == (1, 4)  # test-tiny: one MoE layer of 4 experts
    assert weights.sum(axis=1) == pytest.approx(np.ones(1), abs=1e-4)
    # status bar: source, backend, model, frame rates, per-stage latency
    w._refresh_status()
    assert "face.mp4" in w.status_source.text() and "torch" in w.status_backend.text()
    assert tiny_checkpoint.name in w.status_model.text()
    assert "detect" in w.status_latency.text() and "score" in w.status_latency.text()
    assert "fps" in w.status_fps.text()

    finished = []
    w.controller.thread.finished.connect(lambda: finished.append(True))
    t_stop = time.monotonic()
    w.start_action.trigger()  # Stop
    # measured 10-45 ms from Stop to idle with the machine's two cores 3-5x oversubscribed (docs/stability.md):
    # 5 s is the user's budget, not a tight one; a miss says where every thread was
    try:
        qtbot.waitUntil(lambda: w.controller.idle and finished == [True], timeout=5_000)
    except qtbot.TimeoutError:
        raise AssertionError(f"not idle {time.monotonic() - t_stop:.1f} s after Stop (finished={finished}); "
                             f"threads:\n{thread_stacks()}") from None
    assert w.start_action.text() == "Start"
    qtbot.waitUntil(lambda: not any(t.name == "frame-reader" and t.is_alive() for t in threading.enumerate()),
                    timeout=3_000)
    shown = w.frames_shown
    qtbot.wait(300)
    assert w.frames_shown == shown  # nothing arrives after a stop


def test_every_receiver_of_a_stopped_workers_finished_signal_is_called(qtbot, make_window, tiny_checkpoint,
                                                                      face_clip):
    """The controller deletes a worker's QThread only once the thread has really ended. It used to as soon as
    isFinished() said so, which Qt 6 says while the thread is still emitting finished(): the queued call of a
    Python callable connected after the controller's own slot was then lost (the intermittent "not idle after
    Stop, finished=[]" of the test above; docs/stability.md)."""
    from PySide6.QtCore import Qt
    clip, _ = face_clip
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint)))
    wait_for_faces(qtbot, w)
    thread = w.controller.thread
    # runs in the worker thread inside the emission, after the controller's slot was queued: holds the thread in
    # its last step for long enough that the controller's slot runs meanwhile (what a loaded machine does)
    thread.finished.connect(lambda: time.sleep(0.3), Qt.ConnectionType.DirectConnection)
    called = []
    thread.finished.connect(lambda: called.append(True))
    w.start_action.trigger()  # Stop
    qtbot.waitUntil(lambda: w.controller.idle, timeout=5_000)
    qtbot.waitUntil(lambda: called == [True], timeout=2_000)


def test_display_runs_at_camera_rate_while_a_slow_model_scores(qtbot, make_window, tmp_path,
                                                               tiny_checkpoint, face_clip):
    clip, _ = face_clip
    slow: list[SlowScorer] = []

    def factory(model, backend="auto"):
        slow.append(SlowScorer(torch_scorer(model), delay=0.5))
        return slow[-1]

    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint)),
                    factory=factory)
    wait_for_faces(qtbot, w)
    scored0, shown0 = slow[0].calls, w.frames_shown
    qtbot.wait(2500)
    scored, shown = slow[0].calls - scored0, w.frames_shown - shown0
    # 12 fps video, a 0.5 s model: the picture keeps moving between verdicts (latest frame wins for scoring)
    assert scored <= 6
    assert shown >= 2 * max(scored, 1), (shown, scored)


def test_controls_change_the_pipeline_settings_at_once(qtbot, make_window, tmp_path, tiny_checkpoint, face_clip):
    clip, _ = face_clip
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint)))
    wait_for_faces(qtbot, w, decided=True)
    worker = w.controller.worker

    w.threshold_spin.setValue(0.0)  # every estimate is >= 0: attack
    qtbot.waitUntil(lambda: worker.pipeline.params.threshold == 0.0, timeout=5_000)
    qtbot.waitUntil(lambda: w.last_result.tracks and all(t.verdict == "attack" for t in w.last_result.tracks
                                                         if t.smoothed is not None), timeout=10_000)
    assert w.threshold_slider.value() == 0
    w.threshold_slider.setValue(100)  # nothing reaches 1.0: live
    qtbot.waitUntil(lambda: worker.pipeline.params.threshold == 1.0, timeout=5_000)
    qtbot.waitUntil(lambda: w.last_result.tracks and all(t.verdict == "live" for t in w.last_result.tracks
                                                         if t.smoothed is not None), timeout=10_000)
    assert w.banner.text() == "LIVE"

    w.hysteresis_spin.setValue(0.12)
    w.tau_spin.setValue(1.5)
    w.evidence_spin.setValue(7)
    w.max_faces_spin.setValue(2)
    qtbot.waitUntil(lambda: (worker.pipeline.params.hysteresis, worker.pipeline.params.ema_tau_s,
                             worker.pipeline.params.min_evidence_frames, worker.pipeline.config.max_faces)
                    == (0.12, 1.5, 7, 2), timeout=5_000)
    # remembered for the next run ...
    again = SettingsStore(tmp_path / "settings.ini").values()
    assert (again["threshold"], again["hysteresis"], again["ema_tau_s"], again["max_faces"]) == (1.0, 0.12, 1.5, 2)
    # ... and reset to the command line's values on request
    w.reset_button.click()
    assert SettingsStore(tmp_path / "settings.ini").values() == {}
    qtbot.waitUntil(lambda: worker.pipeline.config.threshold is None and worker.pipeline.params.threshold == 0.5
                    and worker.pipeline.params.hysteresis == 0.05, timeout=5_000)
    assert w.threshold_spin.value() == pytest.approx(0.5)  # the model's own threshold
    assert w.max_faces_spin.value() == 4


def test_remembered_settings_are_used_by_the_next_window(qtbot, make_window, tmp_path, tiny_checkpoint, face_clip):
    clip, _ = face_clip
    SettingsStore(tmp_path / "settings.ini").update({"threshold": 0.61, "ema_tau_s": 0.9})
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint)))
    assert w.threshold_spin.value() == pytest.approx(0.61) and w.tau_spin.value() == pytest.approx(0.9)
    wait_for_faces(qtbot, w)
    assert w.controller.worker.pipeline.params.threshold == pytest.approx(0.61)


def test_record_jsonl_and_snapshot_on_request(qtbot, make_window, tmp_path, tiny_checkpoint, face_clip):
    clip, _ = face_clip
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint)))
    assert not (tmp_path / "snapshots").exists()  # nothing is saved unless asked
    wait_for_faces(qtbot, w)
    rec = tmp_path / "rec" / "verdicts.jsonl"
    w.start_recording(rec)
    assert w.record_action.isChecked()
    qtbot.waitUntil(lambda: rec.is_file() and len(rec.read_text().splitlines()) >= 3, timeout=20_000)
    w.stop_recording()
    qtbot.waitUntil(lambda: "Recording saved" in w.messages.messages().get("record", ""), timeout=5_000)
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert all(set(r) == {"frame", "t", "faces"} for r in lines)
    assert any(r["faces"] and set(r["faces"][0]) == {"track", "box", "score", "smoothed", "verdict"} for r in lines)
    n = len(lines)
    qtbot.wait(400)
    assert len(rec.read_text().splitlines()) == n  # stopped means stopped

    base = w.snapshot(tmp_path / "snapshots" / "shot")
    qtbot.waitUntil(lambda: "Snapshot saved" in w.messages.messages().get("snapshot", ""), timeout=10_000)
    assert Path(f"{base}.png").stat().st_size > 1000
    raw = Path(f"{base}_raw.png")
    import cv2
    assert cv2.imread(str(raw)).shape == (360, 480, 3)  # the raw frame, without overlays
    assert "faces" in json.loads(Path(f"{base}.json").read_text())


def test_bad_model_file_is_a_visible_state_not_a_crash(qtbot, make_window, tmp_path, face_clip, caplog):
    clip, _ = face_clip
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(bad)))
    qtbot.waitUntil(lambda: "Cannot load the model" in w.messages.messages().get("state", ""), timeout=START_S)
    assert str(bad) in w.messages.messages()["state"]
    assert w.banner.text() == "NO VERDICTS"
    assert any(r.levelname == "ERROR" and "broken.safetensors" in r.getMessage() for r in caplog.records)
    # the video still plays, without verdicts
    qtbot.waitUntil(lambda: w.frames_shown >= 3, timeout=10_000)
    assert w.last_result is None


def test_missing_camera_falls_back_to_the_demo_and_says_so(qtbot, make_window, tmp_path, tiny_checkpoint, face_clip):
    clip, _ = face_clip
    # camera 57 exists nowhere; the "bundled demo" is the test clip
    w = make_window(AppConfig(source=57, model=str(tiny_checkpoint)), demo_video=clip)
    qtbot.waitUntil(lambda: w.messages.messages().get("source") == NO_CAMERA_DEMO, timeout=START_S)
    qtbot.waitUntil(lambda: w.frames_shown >= 3, timeout=20_000)
    assert "(demo)" in w.status_source.text()


def test_no_face_and_too_many_faces_are_messages(qtbot, make_window, tmp_path, tiny_checkpoint,
                                                 empty_clip, two_face_clip):
    w = make_window(AppConfig(source=str(empty_clip), loop=True, model=str(tiny_checkpoint)))
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=START_S)
    assert w.banner.text() == "No face in view"
    assert w.messages.messages()["faces"] == "No face in view"
    w.set_source(str(two_face_clip))  # restarts the worker on the other source
    w.max_faces_spin.setValue(1)
    qtbot.waitUntil(lambda: "Too many faces" in w.messages.messages().get("faces", ""), timeout=START_S)
    assert len(w.last_result.tracks) == 1 and w.last_result.dropped_faces == 1


def test_unknown_source_file_is_a_visible_error(qtbot, make_window, tmp_path, tiny_checkpoint):
    w = make_window(AppConfig(source=str(tmp_path / "nope.mp4"), model=str(tiny_checkpoint)))
    qtbot.waitUntil(lambda: "nope.mp4" in w.messages.messages().get("state", ""), timeout=START_S)
    assert "source not found" in w.messages.messages()["state"]


def test_backend_fallback_is_a_visible_message(qtbot, make_window, tmp_path, tiny_checkpoint, face_clip):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cuda backend does not fall back here")
    clip, _ = face_clip
    from liveness_app.scorer import create_scorer
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tiny_checkpoint),
                                               backend="cuda"), factory=create_scorer)
    qtbot.waitUntil(lambda: "unavailable" in w.messages.messages().get("backend", ""), timeout=START_S)
    assert "cuda" in w.messages.messages()["backend"]
    wait_for_faces(qtbot, w)
    assert "cpu" in w.status_backend.text()


def test_model_source_and_backend_pickers_restart_the_pipeline(qtbot, make_window, tmp_path, tiny_checkpoint,
                                                               face_clip):
    from media import make_image_folder
    clip, _ = face_clip
    w = make_window(AppConfig(source=str(clip), loop=True, model=str(tmp_path / "missing.safetensors")))
    qtbot.waitUntil(lambda: "Cannot load" in w.messages.messages().get("state", ""), timeout=START_S)
    w.set_model(str(tiny_checkpoint))  # what the Model… dialog does with the chosen file
    wait_for_faces(qtbot, w)
    assert "state" not in w.messages.messages()  # the error went with the old run
    assert tiny_checkpoint.name in w.status_model.text()

    folder = make_image_folder(tmp_path / "stills", frames=4)
    w.set_source(str(folder))  # what the Image folder… dialog does
    qtbot.waitUntil(lambda: "folder stills/" in w.status_source.text(), timeout=START_S)
    w.last_result = None
    wait_for_faces(qtbot, w)
    assert w.source_combo.currentText() == "stills"

    w.backend_combo.setCurrentText("cpu")
    w.backend_combo.activated.emit(w.backend_combo.currentIndex())  # as a user's pick does
    qtbot.waitUntil(lambda: w.controller.worker is not None and w.controller.worker.config.backend == "cpu"
                    and w.controller.worker.state == "running", timeout=START_S)
    assert SettingsStore(tmp_path / "settings.ini").values()["backend"] == "cpu"


def test_demo_flag_plays_the_bundled_clip(qtbot, make_window, tiny_checkpoint):
    from liveness_app.config import DEMO_VIDEO
    if not DEMO_VIDEO.is_file():
        pytest.skip("assets/demo.mp4 is not built (scripts/make_demo_clip.py)")
    w = make_window(AppConfig(demo=True, model=str(tiny_checkpoint)))
    qtbot.waitUntil(lambda: "(demo)" in w.status_source.text(), timeout=START_S)
    qtbot.waitUntil(lambda: w.frames_shown >= 3, timeout=20_000)
    assert w.source_combo.currentText() == "Demo video"
    assert w.video_view.frame.shape[:2] == (480, 640)


def test_demo_restarts_when_the_model_is_ready_and_shows_the_ground_truth(qtbot, make_window, tiny_checkpoint):
    """The clip plays on while the model loads (here: 2.5 s); the first verdicts must still come from its first
    seconds (the live segment), with the segment's true label and a running scorecard beside the banner."""
    from liveness_app.config import DEMO_VIDEO
    if not DEMO_VIDEO.is_file():
        pytest.skip("assets/demo.mp4 is not built (scripts/make_demo_clip.py)")

    def slow_loading(model, backend="auto"):
        time.sleep(2.5)
        return torch_scorer(model, backend)

    results = []
    w = make_window(AppConfig(demo=True, model=str(tiny_checkpoint)), factory=slow_loading)
    w.controller.result_ready.connect(results.append)
    qtbot.waitUntil(lambda: w.demo_card.isVisible() and len(results) >= 3, timeout=START_S)
    assert results[0].t < 1.0 and results[0].index == 0  # from the beginning, not 2.5 s in
    text = w.demo_card.text()
    assert "Ground truth" in text and "1/4 live" in text and "(live)" in text
    for name in ("live", "print", "replay", "faceswap"):
        assert name in text
    card = w.controller.worker.demo_scorecard
    assert card is not None and card.scores[0].frames >= 3
